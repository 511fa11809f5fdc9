//! Any bytes as an upstream's response head: whenever the quick reader answers (status, end of
//! head), httparse either reads the same head to the same end with the same status, or refuses
//! it — never reads a different head. (The quick reader only finds where a head ends; the fast
//! engine parses every final head with httparse and answers 502 to one httparse refuses, so a
//! refused head is never passed on. A NUL in the reason phrase, found by this target, is one.)
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
        // A head httparse refuses (a bad reason phrase or field, too many fields): the engine
        // refuses it too.
        Err(_) => {}
        Ok(httparse::Status::Partial) => {
            panic!("quick_head said ({code}, {end}) of a head httparse finds unfinished")
        }
    }
});
