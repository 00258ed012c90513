pub mod capture;
pub mod decode;
pub use kdproto;
