//! The config parser and checker on any text: problems or a config, never a panic, and
//! every problem names a line inside the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use switchyard::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(err) = Config::parse(Path::new("fuzz.toml"), text) {
        let lines = text.lines().count().max(1);
        for problem in err.problems() {
            assert!(
                problem.line >= 1 && problem.line <= lines + 1,
                "{problem:?}"
            );
            assert!(!problem.message.contains('\n'), "{problem:?}");
        }
    }
});
