//! Any bytes parse as a CIFAR binary batch or give an error; what parses is
//! whole records with labels inside the class list.
#![no_main]

use atop::formats::cifar;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    for cifar100 in [false, true] {
        if let Ok((images, labels)) = cifar::parse("fuzz-cifar", bytes, cifar100) {
            assert_eq!(images.len(), labels.len() * cifar::PIXELS);
            let classes = if cifar100 { 100 } else { 10 };
            assert!(labels.iter().all(|&l| (0..classes).contains(&l)));
        }
    }
});
