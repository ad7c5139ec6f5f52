//! Filter parsing and matching: the first line is a filter, the rest a
//! products document whose items it is matched against.
#![no_main]

use libfuzzer_sys::fuzz_target;
use simplestreams::filter::{Filter, FilterSet};
use simplestreams::format::{Products, flatten};

const DOC: &str = r#"{"format": "products:1.0", "content_id": "c:1",
 "products": {"p": {"arch": "amd64", "release": "jammy", "versions":
 {"20250101": {"items": {"squashfs": {"ftype": "squashfs", "path": "a/b", "size": 3}}}}}}}"#;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (filter, doc) = text.split_once('\n').unwrap_or((text, DOC));
    let Ok(f) = Filter::parse(filter) else {
        return;
    };
    let set = FilterSet::parse(&[filter]).expect("parses once, parses twice");
    let products = Products::parse("fuzz", doc.as_bytes())
        .or_else(|_| Products::parse("fuzz", DOC.as_bytes()))
        .expect("the fixed document parses");
    for (pname, product) in &products.products {
        for (vname, version) in &product.versions {
            for iname in version.items.keys() {
                let flat = flatten(&products, pname, vname, iname);
                assert_eq!(f.matches(&flat), set.matches(&flat));
            }
        }
    }
});
