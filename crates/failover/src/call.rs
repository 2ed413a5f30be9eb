//! Every API call the controller makes is bounded in time and fails with one
//! typed error: the shared rule of `tandem-util`.

pub use tandem_util::{
    backoff,
    call::{CALL_TIMEOUT, CallError, call},
};
