//! Any bytes parse as an IDX file or give an error; what parses holds the
//! number of values its header promises.
#![no_main]

use atop::formats::idx;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok((dims, data)) = idx::parse("fuzz-idx", bytes) {
        assert_eq!(dims.iter().product::<usize>(), data.len());
    }
});
