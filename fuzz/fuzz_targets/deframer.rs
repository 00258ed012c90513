//! The serial deframer on arbitrary streams cut into arbitrary reads: no panic, bounded buffering,
//! and the same events as when the stream arrives whole.
#![no_main]

use kdproto::kd::{DeframeEvent, Deframer};
use libfuzzer_sys::fuzz_target;

fn events(chunks: &[&[u8]]) -> Vec<DeframeEvent> {
    let mut deframer = Deframer::new();
    let mut events = Vec::new();
    for chunk in chunks {
        deframer.push(chunk);
        events.extend(std::iter::from_fn(|| deframer.poll()));
    }
    events
}

fuzz_target!(|data: &[u8]| {
    let Some((&split_seed, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(split_seed % 17) + 1;
    let chunks: Vec<&[u8]> = stream.chunks(step).collect();
    assert_eq!(events(&chunks), events(&[stream]));
});
