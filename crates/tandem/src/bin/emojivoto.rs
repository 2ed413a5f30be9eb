//! `emojivoto`: the emojivoto-compatible demo app (crates/emojivoto). It is
//! a development tool like `tandem-testbed`: built beside `tandem`, so that
//! the testbed makes the app's image from it; the tandem image does not
//! carry it.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    tandem_emojivoto::main()
}
