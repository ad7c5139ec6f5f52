//! The metadata of a re-signed mirror: products files and an index that list
//! exactly what the mirror holds, instead of upstream's documents copied
//! byte for byte (which list every upstream release, arch and kernel, so that
//! MAAS offers images whose every file is missing).
//!
//! Pure functions, no I/O:
//!
//! - [`products_document`]: from upstream's products document and the
//!   mirror's state for it (`.data/<content_id>`, a [`Products`] tree),
//!   the products document listing the mirrored products, versions and
//!   items, each with every field it had upstream.
//! - [`index_document`]: from upstream's index and the products documents
//!   the mirror publishes, an index naming only those, each entry listing
//!   only its mirrored products.
//! - [`signed_index`]: the same index with its paths pointing at the
//!   clear-signed `.sjson` files.
//! - [`keep_updated`] and [`render`]: the same holdings give the same bytes.
//!
//! # Choices
//!
//! - **`_aliases` are expanded, and not published.** The state keeps the
//!   expanded tree; the spec says any dict whose field holds an aliased value
//!   gets the alias's pairs, so the expanded tree means the same to readers
//!   that expand (the reference, MAAS's image import) and is the only form
//!   that readers with strict models which do not expand (MAAS 3.8) read
//!   right. images.maas.io publishes no `_aliases` at all.
//! - **Items, versions and products come from the state**: what the mirror
//!   verified when it downloaded them (size, checksums, path), with every
//!   field upstream gave them then. Upstream's document gives the document's
//!   own fields (`content_id`, `datatype`, `format`, `updated`, `license`,
//!   ...).
//! - **Deterministic.** Keys sorted at every level, indent 1, one final line
//!   break (the layout of images.maas.io's files and of the reference's
//!   state). [`keep_updated`] carries the previous document's `updated` over
//!   when nothing else changed, so that a document is rewritten (and its
//!   validators change) only when the holdings do.

use crate::error::{Error, Result};
use crate::format::{INDEX_FORMAT, Item, PRODUCTS_FORMAT, Product, Products, Version};
use crate::path::RelPath;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The products document listing exactly what `held` (the mirror's state
/// for one content id) holds, with the document-level fields of `upstream`
/// (upstream's parsed products document, aliases expanded). `None` when the
/// mirror holds nothing of it (no product with an item): no products file
/// is to be published then, and the index is not to name it.
///
/// Fails when the two name different content ids, or neither names one.
pub fn products_document(
    upstream: &Products,
    held: &Products,
) -> Result<Option<Map<String, Value>>> {
    let content_id = match (upstream.content_id(), held.content_id()) {
        (Some(u), Some(h)) if u != h => {
            return Err(Error::metadata(
                u,
                format!("the mirror's state is that of another content id ({h:?})"),
            ));
        }
        (Some(c), _) | (None, Some(c)) => c.to_owned(),
        (None, None) => {
            return Err(Error::metadata(
                "products document",
                "no \"content_id\" in the document or the mirror's state",
            ));
        }
    };
    let products = held_products(held);
    if products.is_empty() {
        return Ok(None);
    }
    let mut fields = upstream.fields.clone();
    fields.insert("content_id".into(), Value::String(content_id.clone()));
    fields.insert("format".into(), Value::String(PRODUCTS_FORMAT.into()));
    let Value::Object(doc) = (Products { fields, products }).to_value() else {
        return Err(Error::metadata(
            content_id,
            "the products tree is not a JSON object",
        ));
    };
    Ok(Some(doc))
}

/// The products of `held` that hold at least one item, each with only its
/// versions that hold one.
fn held_products(held: &Products) -> BTreeMap<String, Product> {
    held.products
        .iter()
        .filter_map(|(name, product)| {
            let versions: BTreeMap<String, Version> = product
                .versions
                .iter()
                .filter(|(_, v)| !v.items.is_empty())
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect();
            (!versions.is_empty()).then(|| {
                let product = Product {
                    fields: product.fields.clone(),
                    versions,
                };
                (name.clone(), product)
            })
        })
        .collect()
}

/// `held` with only the items `keep` accepts (for instance those whose file
/// is in the mirror with its size); versions and products left without
/// items are dropped.
pub fn retain_items(held: &Products, mut keep: impl FnMut(&Item) -> bool) -> Products {
    let mut out = Products {
        fields: held.fields.clone(),
        products: BTreeMap::new(),
    };
    for (pname, product) in &held.products {
        let mut versions = BTreeMap::new();
        for (vname, version) in &product.versions {
            let items: BTreeMap<String, Item> = version
                .items
                .iter()
                .filter(|(_, item)| keep(item))
                .map(|(n, i)| (n.clone(), i.clone()))
                .collect();
            if !items.is_empty() {
                let fields = version.fields.clone();
                versions.insert(
                    vname.clone(),
                    Version {
                        fields,
                        items: Arc::new(items),
                    },
                );
            }
        }
        if !versions.is_empty() {
            let fields = product.fields.clone();
            out.products
                .insert(pname.clone(), Product { fields, versions });
        }
    }
    out
}

/// `held` without the delta items (LXD's `.vcdiff`, an item with a
/// `delta_base`) whose base version it does not hold: a client offered
/// such a delta could not apply it. A base is held when its version keeps
/// an item that is not itself a delta. Versions and products left without
/// items are dropped.
pub fn without_orphan_deltas(held: Products) -> Products {
    let mut out = Products {
        fields: held.fields,
        products: BTreeMap::new(),
    };
    for (pname, product) in held.products {
        let bases: Vec<String> = product
            .versions
            .iter()
            .filter(|(_, v)| v.items.values().any(|i| delta_base(i).is_none()))
            .map(|(n, _)| n.clone())
            .collect();
        let applicable = |item: &Item| delta_base(item).is_none_or(|b| bases.contains(&b));
        let versions: BTreeMap<String, Version> = product
            .versions
            .into_iter()
            .filter_map(|(vname, version)| {
                let items: BTreeMap<String, Item> = Arc::unwrap_or_clone(version.items)
                    .into_iter()
                    .filter(|(_, item)| applicable(item))
                    .collect();
                (!items.is_empty()).then(|| {
                    let fields = version.fields;
                    (
                        vname,
                        Version {
                            fields,
                            items: Arc::new(items),
                        },
                    )
                })
            })
            .collect();
        if !versions.is_empty() {
            let fields = product.fields;
            out.products.insert(pname, Product { fields, versions });
        }
    }
    out
}

/// The version a delta item applies to (its `delta_base`), if it is one.
fn delta_base(item: &Item) -> Option<String> {
    match item.field("delta_base") {
        Some(Value::String(base)) => Some(base),
        _ => None,
    }
}

/// One products file a re-signed mirror publishes, as the index lists it.
#[derive(Debug, Clone, Copy)]
pub struct Listed<'a> {
    /// The plain (`.json`) products file, relative to the mirror root
    /// (upstream's path, see [`json_path`]).
    pub path: &'a RelPath,
    /// Its document, as [`products_document`] made it.
    pub products: &'a Map<String, Value>,
}

/// The index (`index:1.0`) naming exactly the `listed` products files, each
/// entry with upstream's entry fields (when upstream's index has one for
/// that content id) and, from the listed document, `path`, `format`,
/// `datatype`, `updated` and the sorted names of its `products`. The
/// document-level fields (`updated`, ...) are upstream's. Entry paths are
/// the plain `.json` ones (see [`signed_index`] for the `.sjson` family).
///
/// Fails when upstream's document is not an index, or a listed document
/// has no `content_id` or shares it with another.
pub fn index_document(
    upstream: &Map<String, Value>,
    listed: &[Listed<'_>],
) -> Result<Map<String, Value>> {
    if upstream.get("format").and_then(Value::as_str) != Some(INDEX_FORMAT) {
        return Err(Error::metadata(
            "index",
            format!("upstream's entry document is not an {INDEX_FORMAT:?} index"),
        ));
    }
    let upstream_entries = upstream.get("index").and_then(Value::as_object);
    let mut entries = Map::new();
    for file in listed {
        let Some(content_id) = file.products.get("content_id").and_then(Value::as_str) else {
            return Err(Error::metadata(file.path.as_str(), "no \"content_id\""));
        };
        if entries.contains_key(content_id) {
            return Err(Error::metadata(
                file.path.as_str(),
                format!("content id {content_id:?} listed twice"),
            ));
        }
        let mut entry = upstream_entries
            .and_then(|e| e.get(content_id))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        entry.insert("path".into(), Value::String(file.path.as_str().into()));
        entry.insert("format".into(), Value::String(PRODUCTS_FORMAT.into()));
        for field in ["datatype", "updated"] {
            if let Some(v) = file.products.get(field) {
                entry.insert(field.into(), v.clone());
            }
        }
        let mut names: Vec<&String> = file
            .products
            .get("products")
            .and_then(Value::as_object)
            .map(|p| p.keys().collect())
            .unwrap_or_default();
        names.sort();
        let names = names
            .into_iter()
            .map(|n| Value::String(n.clone()))
            .collect();
        entry.insert("products".into(), Value::Array(names));
        entries.insert(content_id.to_owned(), Value::Object(entry));
    }
    let mut doc = upstream.clone();
    doc.insert("index".into(), Value::Object(entries));
    Ok(doc)
}

/// `index` with every entry's `path` that ends in `.json` pointing at the
/// clear-signed `.sjson` beside it (what `index.sjson` lists, as the
/// reference's `js2signed` writes it). Other entries are left alone.
pub fn signed_index(index: &Map<String, Value>) -> Map<String, Value> {
    let mut doc = index.clone();
    if let Some(Value::Object(entries)) = doc.get_mut("index") {
        for entry in entries.values_mut() {
            if let Some(Value::String(path)) = entry.get_mut("path")
                && let Some(stem) = path.strip_suffix(".json")
            {
                *path = format!("{stem}.sjson");
            }
        }
    }
    doc
}

/// `index` with every entry's `path` that ends in `.sjson` pointing at the
/// plain `.json` twin beside it (what a plain `index.json` lists: the
/// inverse of [`signed_index`]). Other entries are left alone.
pub fn plain_index(index: &Map<String, Value>) -> Map<String, Value> {
    let mut doc = index.clone();
    if let Some(Value::Object(entries)) = doc.get_mut("index") {
        for entry in entries.values_mut() {
            if let Some(Value::String(path)) = entry.get_mut("path")
                && let Some(stem) = path.strip_suffix(".sjson")
            {
                *path = format!("{stem}.json");
            }
        }
    }
    doc
}

/// The plain (`.json`) path of a metadata document named by `rel`: a
/// `.sjson` path with its suffix changed, any other path unchanged.
pub fn json_path(rel: &RelPath) -> RelPath {
    match rel.as_str().strip_suffix(".sjson") {
        Some(stem) => RelPath::parse(&format!("{stem}.json")).unwrap_or_else(|_| rel.clone()),
        None => rel.clone(),
    }
}

/// The clear-signed (`.sjson`) path beside the plain document `rel`
/// (`None` when `rel` does not end in `.json`).
pub fn sjson_path(rel: &RelPath) -> Option<RelPath> {
    let stem = rel.as_str().strip_suffix(".json")?;
    RelPath::parse(&format!("{stem}.sjson")).ok()
}

/// The detached-signature (`.json.gpg`) path beside the plain document
/// `rel`.
pub fn detached_path(rel: &RelPath) -> RelPath {
    rel.with_suffix(".gpg")
}

/// Gives `new` the `updated` field of `previous` (the document published
/// before) when the two differ in nothing else, so that unchanged holdings
/// render to unchanged bytes; otherwise leaves `new` as it is.
pub fn keep_updated(new: &mut Map<String, Value>, previous: &Map<String, Value>) {
    let without = |m: &Map<String, Value>| {
        let mut m = m.clone();
        m.remove("updated");
        m
    };
    if without(new) != without(previous) {
        return;
    }
    match previous.get("updated") {
        Some(v) => {
            new.insert("updated".into(), v.clone());
        }
        None => {
            new.remove("updated");
        }
    }
}

/// The bytes of a published document: keys sorted at every level, indent 1,
/// one final line break.
pub fn render(doc: &Map<String, Value>) -> Vec<u8> {
    let mut out = crate::json::sorted_pretty(&Value::Object(doc.clone()));
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{FlatItem, flatten};

    const V3: &str = "com.ubuntu.maas:stable:v3:download";
    const BOOTLOADERS: &str = "com.ubuntu.maas:stable:1:bootloader-download";

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../../tests/fixtures/maas-real/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn upstream(content_id: &str) -> Products {
        Products::parse(content_id, &fixture(&format!("{content_id}.json"))).unwrap()
    }

    fn upstream_json(content_id: &str) -> Map<String, Value> {
        serde_json::from_slice(&fixture(&format!("{content_id}.json"))).unwrap()
    }

    /// The state a mirror run with `wanted` as its filters and `--max 1`
    /// leaves: the newest version of each product with a wanted item, with
    /// only its wanted items.
    fn mirror_of(up: &Products, wanted: impl Fn(&FlatItem) -> bool) -> Products {
        let mut held = Products {
            fields: up.fields.clone(),
            products: BTreeMap::new(),
        };
        for (pname, product) in &up.products {
            for (vname, version) in product.versions.iter().rev() {
                let items: BTreeMap<String, Item> = version
                    .items
                    .iter()
                    .filter(|(i, _)| wanted(&flatten(up, pname, vname, i)))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if items.is_empty() {
                    continue;
                }
                let mut p = Product {
                    fields: product.fields.clone(),
                    versions: BTreeMap::new(),
                };
                let fields = version.fields.clone();
                p.versions.insert(
                    vname.clone(),
                    Version {
                        fields,
                        items: Arc::new(items),
                    },
                );
                held.products.insert(pname.clone(), p);
                break;
            }
        }
        held
    }

    fn obj<'a>(v: &'a Value, key: &str) -> &'a Map<String, Value> {
        v.get(key)
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("no object {key:?}"))
    }

    fn keys(m: &Map<String, Value>) -> Vec<&str> {
        m.keys().map(String::as_str).collect()
    }

    /// Every held item is listed with all of upstream's fields at every
    /// level, and nothing else is listed.
    fn assert_lists_exactly(doc: &Map<String, Value>, held: &Products, raw: &Map<String, Value>) {
        let listed = doc["products"].as_object().unwrap();
        let raw_products = raw["products"].as_object().unwrap();
        assert_eq!(
            keys(listed),
            held.products.keys().map(String::as_str).collect::<Vec<_>>()
        );
        for (pname, product) in &held.products {
            let out = &listed[pname];
            let up = &raw_products[pname];
            for (k, v) in up.as_object().unwrap() {
                if k != "versions" {
                    assert_eq!(&out[k], v, "{pname}: field {k}");
                }
            }
            let versions = obj(out, "versions");
            assert_eq!(
                keys(versions),
                product
                    .versions
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
            );
            for (vname, version) in &product.versions {
                let items = obj(&versions[vname], "items");
                assert_eq!(
                    keys(items),
                    version.items.keys().map(String::as_str).collect::<Vec<_>>()
                );
                for iname in version.items.keys() {
                    assert_eq!(
                        items[iname], up["versions"][vname]["items"][iname],
                        "{pname} {vname} {iname}: every upstream field, unchanged"
                    );
                }
            }
        }
        for (k, v) in raw {
            if k != "products" {
                assert_eq!(&doc[k], v, "document field {k}");
            }
        }
    }

    #[test]
    fn lists_exactly_the_mirrored_images_with_every_upstream_field() {
        let up = upstream(V3);
        let raw = upstream_json(V3);
        let held = mirror_of(&up, |f| {
            f.get("arch") == Some("amd64") && f.get("release") == Some("jammy")
        });
        assert_eq!(held.products.len(), 2, "ga- and hwe-22.04 for amd64");
        let doc = products_document(&up, &held).unwrap().unwrap();
        assert_lists_exactly(&doc, &held, &raw);

        // No noble, no arm64 left: nothing MAAS could select and not find.
        let text = String::from_utf8(render(&doc)).unwrap();
        assert!(!text.contains("noble") && !text.contains("arm64"), "{text}");

        // What MAAS 3.8's strict models need is there, manifests included.
        for product in doc["products"].as_object().unwrap().values() {
            for field in [
                "release",
                "release_title",
                "subarch",
                "subarches",
                "version",
            ] {
                assert!(product[field].is_string(), "product {field}");
            }
            for version in obj(product, "versions").values() {
                let items = obj(version, "items");
                assert!(items.contains_key("manifest"));
                for item in items.values() {
                    for field in ["ftype", "path", "sha256"] {
                        assert!(item[field].is_string(), "item {field}");
                    }
                    assert!(item["size"].is_u64(), "item size");
                }
            }
        }

        // A client's view (the flattened items) is upstream's.
        let back = Products::parse("held", text.as_bytes()).unwrap();
        for (p, product) in &held.products {
            for (v, version) in &product.versions {
                for i in version.items.keys() {
                    assert_eq!(flatten(&back, p, v, i), flatten(&up, p, v, i));
                }
            }
        }
    }

    #[test]
    fn bootloaders_keep_their_source_package_fields() {
        let up = upstream(BOOTLOADERS);
        let held = mirror_of(&up, |f| {
            f.get("os")
                .is_some_and(|os| os.starts_with("grub") || os == "pxelinux")
        });
        assert_eq!(held.products.len(), 5);
        let doc = products_document(&up, &held).unwrap().unwrap();
        assert_lists_exactly(&doc, &held, &upstream_json(BOOTLOADERS));
        let mut items = 0;
        for product in doc["products"].as_object().unwrap().values() {
            for version in obj(product, "versions").values() {
                for item in obj(version, "items").values() {
                    for field in ["src_package", "src_release", "src_version"] {
                        assert!(item[field].is_string(), "{field}");
                    }
                    items += 1;
                }
            }
        }
        assert!(items >= 5);
    }

    #[test]
    fn nothing_held_means_no_document() {
        let up = upstream(V3);
        let none = mirror_of(&up, |f| f.get("release") == Some("warty"));
        assert!(products_document(&up, &none).unwrap().is_none());
        let empty_version = {
            let mut held = mirror_of(&up, |_| true);
            for p in held.products.values_mut() {
                for v in p.versions.values_mut() {
                    v.items = Default::default();
                }
            }
            held
        };
        assert!(products_document(&up, &empty_version).unwrap().is_none());
        assert!(
            products_document(&up, &Products::default())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn another_content_id_is_an_error() {
        let up = upstream(V3);
        let held = mirror_of(&upstream(BOOTLOADERS), |_| true);
        let err = products_document(&up, &held).unwrap_err().to_string();
        assert!(err.contains(V3) && err.contains(BOOTLOADERS), "{err}");
    }

    #[test]
    fn aliases_are_published_expanded() {
        let doc = r#"{"format": "products:1.0", "content_id": "c:1",
          "_aliases": {"release": {"xenial": {"release_title": "16.04 LTS", "version": "16.04"}}},
          "products": {"p": {"release": "xenial", "versions": {"1": {"items": {
            "k": {"ftype": "boot-kernel", "path": "x/k", "size": 1}}}}}}}"#;
        let up = Products::parse("u", doc.as_bytes()).unwrap();
        let held = mirror_of(&up, |_| true);
        let out = products_document(&up, &held).unwrap().unwrap();
        assert!(!out.contains_key("_aliases"));
        assert_eq!(out["products"]["p"]["release_title"], "16.04 LTS");
        assert_eq!(out["products"]["p"]["version"], "16.04");
    }

    #[test]
    fn retain_items_drops_what_is_left_empty() {
        let up = upstream(V3);
        let held = mirror_of(&up, |_| true);
        let squashfs = retain_items(&held, |i| i.fields()["ftype"] == "squashfs");
        for p in squashfs.products.values() {
            for v in p.versions.values() {
                assert_eq!(v.items.keys().collect::<Vec<_>>(), ["squashfs"]);
            }
        }
        assert_eq!(squashfs.products.len(), held.products.len());
        let nothing = retain_items(&held, |_| false);
        assert!(nothing.products.is_empty());
        assert!(products_document(&up, &nothing).unwrap().is_none());
    }

    #[test]
    fn index_names_only_the_held_files_and_their_held_products() {
        let index: Map<String, Value> = serde_json::from_slice(&fixture("index.json")).unwrap();
        let v3 = upstream(V3);
        let v3_doc = products_document(
            &v3,
            &mirror_of(&v3, |f| {
                f.get("arch") == Some("amd64") && f.get("release") == Some("jammy")
            }),
        )
        .unwrap()
        .unwrap();
        let boot = upstream(BOOTLOADERS);
        let boot_doc =
            products_document(&boot, &mirror_of(&boot, |f| f.get("arch") == Some("amd64")))
                .unwrap()
                .unwrap();
        let v3_path = RelPath::parse(&format!("streams/v1/{V3}.json")).unwrap();
        let boot_path = RelPath::parse(&format!("streams/v1/{BOOTLOADERS}.json")).unwrap();
        let listed = [
            Listed {
                path: &v3_path,
                products: &v3_doc,
            },
            Listed {
                path: &boot_path,
                products: &boot_doc,
            },
        ];
        let out = index_document(&index, &listed).unwrap();
        let entries = out["index"].as_object().unwrap();
        let mut names = keys(entries);
        names.sort();
        assert_eq!(names, [BOOTLOADERS, V3], "no centos entry");
        assert_eq!(
            entries[V3]["products"],
            serde_json::json!([
                "com.ubuntu.maas.stable:v3:boot:22.04:amd64:ga-22.04",
                "com.ubuntu.maas.stable:v3:boot:22.04:amd64:hwe-22.04"
            ])
        );
        assert_eq!(
            entries[BOOTLOADERS]["products"],
            serde_json::json!([
                "com.ubuntu.maas.stable:1:grub-efi-signed:uefi:amd64",
                "com.ubuntu.maas.stable:1:pxelinux:pxe:amd64"
            ])
        );
        assert_eq!(entries[V3]["path"], v3_path.as_str());
        assert_eq!(entries[V3]["updated"], v3_doc["updated"]);
        assert_eq!(entries[V3]["datatype"], "image-ids");
        assert_eq!(entries[V3]["format"], "products:1.0");
        assert_eq!(out["format"], "index:1.0");
        assert_eq!(out["updated"], index["updated"]);

        let signed = signed_index(&out);
        assert_eq!(
            signed["index"][V3]["path"],
            format!("streams/v1/{V3}.sjson")
        );
        assert_eq!(
            out["index"][V3]["path"],
            v3_path.as_str(),
            "the plain one is untouched"
        );

        // The index parses as one, and names each file once.
        let parsed = crate::format::Index::parse("i", &render(&signed)).unwrap();
        assert_eq!(parsed.entries.len(), 2);
        let dup = [listed[0], listed[0]];
        assert!(
            index_document(&index, &dup)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        assert!(index_document(&v3_doc, &listed).is_err(), "not an index");
    }

    #[test]
    fn same_holdings_same_bytes() {
        let up = upstream(V3);
        let held = mirror_of(&up, |f| f.get("arch") == Some("amd64"));
        let first = products_document(&up, &held).unwrap().unwrap();
        let bytes = render(&first);
        assert!(bytes.starts_with(b"{\n \"content_id\": "));
        assert!(bytes.ends_with(b"}\n"));
        assert_eq!(
            render(&products_document(&up, &held).unwrap().unwrap()),
            bytes
        );

        // Upstream republished (new `updated`, fields in another order), the
        // holdings unchanged: the same bytes once the old `updated` is kept.
        let mut later = up.clone();
        later.fields = later.fields.into_iter().rev().collect();
        later
            .fields
            .insert("updated".into(), "Fri, 25 Jul 2025 09:00:00 +0000".into());
        let mut second = products_document(&later, &held).unwrap().unwrap();
        assert_ne!(render(&second), bytes);
        keep_updated(&mut second, &first);
        assert_eq!(render(&second), bytes);

        // Holdings changed: the new document, with upstream's new `updated`.
        let more = mirror_of(&up, |_| true);
        let mut third = products_document(&later, &more).unwrap().unwrap();
        keep_updated(&mut third, &first);
        assert_eq!(third["updated"], "Fri, 25 Jul 2025 09:00:00 +0000");
        assert_ne!(render(&third), bytes);
    }

    #[test]
    fn paths_of_the_families() {
        let json = RelPath::parse("streams/v1/index.json").unwrap();
        let sjson = RelPath::parse("streams/v1/index.sjson").unwrap();
        assert_eq!(json_path(&sjson), json);
        assert_eq!(json_path(&json), json);
        assert_eq!(sjson_path(&json), Some(sjson));
        assert_eq!(sjson_path(&RelPath::parse("a/b.txt").unwrap()), None);
        assert_eq!(detached_path(&json).as_str(), "streams/v1/index.json.gpg");
    }

    fn lxd_products(versions: &[&str]) -> Products {
        let mut vs = serde_json::Map::new();
        for v in versions {
            let mut items = serde_json::json!({
                "root.squashfs": {"ftype": "squashfs", "path": format!("i/{v}/rootfs.squashfs"), "size": 3, "sha256": "a".repeat(64)},
            });
            if *v == "20260102_07:42" {
                items["delta-20260101_07:42.vcdiff"] = serde_json::json!({
                    "ftype": "squashfs.vcdiff", "delta_base": "20260101_07:42",
                    "path": format!("i/{v}/20260101_07:42.vcdiff"), "size": 1, "sha256": "b".repeat(64),
                });
            }
            vs.insert((*v).to_owned(), serde_json::json!({ "items": items }));
        }
        let doc = serde_json::json!({
            "content_id": "images", "format": "products:1.0",
            "products": {"ubuntu:noble:amd64:default": {"arch": "amd64", "versions": vs}},
        });
        Products::parse("images.json", &serde_json::to_vec(&doc).unwrap()).unwrap()
    }

    fn item_names(p: &Products) -> Vec<String> {
        p.items()
            .map(|e| format!("{}/{}", e.version_name, e.item_name))
            .collect()
    }

    #[test]
    fn a_delta_is_kept_only_beside_its_base() {
        let both = without_orphan_deltas(lxd_products(&["20260101_07:42", "20260102_07:42"]));
        assert_eq!(
            item_names(&both),
            [
                "20260101_07:42/root.squashfs",
                "20260102_07:42/delta-20260101_07:42.vcdiff",
                "20260102_07:42/root.squashfs",
            ]
        );
        let newest = without_orphan_deltas(lxd_products(&["20260102_07:42"]));
        assert_eq!(item_names(&newest), ["20260102_07:42/root.squashfs"]);
    }

    #[test]
    fn plain_index_points_at_the_plain_twins() {
        let signed = serde_json::json!({"format": "index:1.0", "index": {
            "a": {"path": "streams/v1/a.sjson"}, "b": {"path": "streams/v1/b.json"}}});
        let Value::Object(signed) = signed else {
            unreachable!()
        };
        let plain = plain_index(&signed);
        assert_eq!(plain["index"]["a"]["path"], "streams/v1/a.json");
        assert_eq!(plain["index"]["b"]["path"], "streams/v1/b.json");
        assert_eq!(signed_index(&plain)["index"]["a"], signed["index"]["a"]);
    }
}
