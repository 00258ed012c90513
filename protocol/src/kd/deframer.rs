pub enum DeframeEvent {}
pub struct Deframer;
