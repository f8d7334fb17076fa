//! Any query string parses or gives an error; what parses stays within the
//! budgets and round-trips exactly.
#![no_main]

use atop::demo::permalink::{MAX_EOT, MAX_STEPS, Permalink};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|query: &str| {
    if let Ok(link) = Permalink::from_query(query) {
        assert!(link.steps as u64 <= MAX_STEPS && link.eot as u64 <= MAX_EOT);
        assert_eq!(Permalink::from_query(&link.to_query()).unwrap(), link);
    }
});
