//! Any bytes as a request head: the framing reader never panics, and reports a body length only
//! when every `Content-Length` of the head states that one number and no `Transfer-Encoding` is
//! there.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut storage = [httparse::EMPTY_HEADER; wire::MAX_HEADERS];
    let mut req = httparse::Request::new(&mut storage);
    let Ok(httparse::Status::Complete(n)) = req.parse(data) else {
        return;
    };
    assert!(n <= data.len());
    let framing = wire::request_framing(req.headers);
    let lengths: Vec<&[u8]> = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| h.value)
        .collect();
    let coded = req.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding") || h.name.eq_ignore_ascii_case("expect")
    });
    match framing {
        Ok(wire::RequestFraming::Length {
            body_len, hosts, ..
        }) => {
            assert!(!coded, "a coded body was framed by length");
            assert_eq!(
                hosts,
                req.headers
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case("host"))
                    .count()
            );
            match body_len {
                None => assert!(lengths.is_empty()),
                Some(len) => {
                    assert!(!lengths.is_empty());
                    for v in lengths {
                        assert_eq!(wire::content_length_value(v), Some(len));
                    }
                }
            }
        }
        Ok(wire::RequestFraming::HandOff) => assert!(coded),
        Err(_) => {}
    }
});
