//! Any bytes as a chunked body, fed in two pieces split where the first byte says: no panic, an
//! end (if any) within the input, and the same verdict as feeding it whole.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, body)) = data.split_first() else {
        return;
    };
    let whole = wire::ChunkScan::default().feed(body);
    if let Ok(Some(end)) = whole {
        assert!(end <= body.len());
    }
    let at = usize::from(split).min(body.len());
    let mut scan = wire::ChunkScan::default();
    let pieces = match scan.feed(&body[..at]) {
        Ok(None) => scan.feed(&body[at..]).map(|end| end.map(|n| n + at)),
        first => first,
    };
    match (whole, pieces) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("whole: {a:?}, in two pieces: {b:?}"),
    }
});
