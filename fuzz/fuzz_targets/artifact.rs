//! Any bytes read as an artifact or give an error; what reads back verified
//! serialises and reads back to the same artifact.
#![no_main]

use atop::artifact::Artifact;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(artifact) = Artifact::from_bytes(bytes, "fuzz.safetensors") {
        let again = artifact.to_bytes().expect("a verified artifact serialises");
        let back = Artifact::from_bytes(&again, "fuzz.safetensors").expect("and reads back");
        assert_eq!(back, artifact);
    }
});
