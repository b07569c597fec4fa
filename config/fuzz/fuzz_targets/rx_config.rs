//! Fuzzes `RxConfig::parse` with arbitrary text: it must never panic, and every rejection must
//! be located diagnostics (see `config_fuzz::check_rejection`). Input that is not UTF-8 is
//! skipped: `RxConfig::load` rejects it before parsing.
#![no_main]

use config::rx::RxConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = config_fuzz::config_path("gateway-rx.toml");
    if let Err(e) = RxConfig::parse(text, &path) {
        config_fuzz::check_rejection(text, &e);
    }
});
