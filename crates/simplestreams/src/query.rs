//! Queries: which items a stream offers under filters and `--max`, as
//! flattened items with their URLs. A query is a plan over an empty mirror.

use crate::format::{FlatItem, flatten};
use crate::metadata::Stream;
use crate::plan::{MirrorOptions, plan_fresh};
use crate::source::join_url;
use url::Url;

/// The items of `stream` that pass the options' filters, newest `max`
/// versions per product, each flattened with `item_url` added for items
/// that name a file under `root`.
pub fn query(stream: Stream, root: &Url, options: &MirrorOptions) -> Vec<FlatItem> {
    let mut out = Vec::new();
    for sp in plan_fresh(stream, options) {
        for it in &sp.added {
            let mut flat = flatten(&sp.source.products, &it.product, &it.version, &it.item);
            if let Some(path) = &it.path {
                flat.insert("item_url", join_url(root, path).to_string());
            }
            out.push(flat);
        }
    }
    out
}
