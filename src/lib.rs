pub mod capture;
pub mod decode;
pub mod sim;
pub use kdproto;
