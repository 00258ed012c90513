pub use kdproto;
