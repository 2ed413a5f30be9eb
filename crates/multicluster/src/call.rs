//! One API call, bounded: a timeout, or the API's answer with its HTTP code
//! (the shared rule of `tandem-util`).

pub use tandem_util::call::{CALL_TIMEOUT, CallError, call};
