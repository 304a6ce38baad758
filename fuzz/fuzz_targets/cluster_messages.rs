//! Feeds arbitrary bytes to the Redis adapters' decoders (classic broadcasts, requests,
//! responses; sharded `ClusterAdapter` messages; channel names): what another node or a
//! hostile Redis client could publish. Decoded messages must re-encode into messages that
//! decode again.

#![no_main]

use ioscale::adapter::redis::wire::{
    decode_broadcast, decode_request, decode_response, encode_request, encode_response,
    parse_channel,
};
use ioscale::adapter::redis::sharded::wire as sharded;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let _ = decode_broadcast(input);
    if let Ok(Some(request)) = decode_request(input) {
        let again = decode_request(&encode_request("fuzz", &request));
        assert!(again.is_ok(), "a decoded request re-encodes to something decodable");
    }
    if let Ok(response) = decode_response(input) {
        assert!(decode_response(&encode_response(&response)).is_ok());
    }
    if let Ok(Some(envelope)) = sharded::decode(input) {
        let again = sharded::decode(&sharded::encode("fuzz", "/", &envelope.message));
        assert!(
            matches!(again, Ok(Some(_))),
            "a decoded sharded message re-encodes to something decodable"
        );
    }
    if let Ok(text) = std::str::from_utf8(input) {
        let _ = parse_channel("socket.io", text);
        let _ = sharded::parse_channel("socket.io", text);
    }
});
