//! Any bytes as an upstream's response head: whenever the quick reader answers (status, end of
//! head), httparse reads the same head to the same end with the same status.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((code, end)) = wire::quick_head(data) else {
        return;
    };
    assert!(end <= data.len());
    let mut storage = [httparse::EMPTY_HEADER; wire::MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut storage);
    match resp.parse(data) {
        Ok(httparse::Status::Complete(n)) => {
            assert_eq!(n, end);
            assert_eq!(resp.code, Some(code));
        }
        // More fields than the reader's storage holds: httparse refuses, the engine then too.
        Err(httparse::Error::TooManyHeaders) => {}
        other => panic!("quick_head said ({code}, {end}), httparse {other:?}"),
    }
});
