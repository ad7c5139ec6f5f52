//! The SimpleStreams document formats: the index (`index:1.0`) and products
//! files (`products:1.0`), with `_aliases` expanded and every item path checked.
//!
//! Documents are parsed from JSON into typed trees that keep every field
//! (so that the mirror's state can be written back in the reference's
//! format), plus typed accessors for what the engine needs: item paths,
//! sizes and checksums.

use crate::error::{Error, Result};
use crate::json::SortedMap;
use crate::path::RelPath;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The `format` of an index document.
pub const INDEX_FORMAT: &str = "index:1.0";
/// The `format` of a products document.
pub const PRODUCTS_FORMAT: &str = "products:1.0";

/// A parsed index document.
#[derive(Debug, Clone)]
pub struct Index {
    /// The index entries, by content id.
    pub entries: BTreeMap<String, IndexEntry>,
}

/// One entry of an index: a products file and what it describes.
#[derive(Debug, Clone)]
pub struct IndexEntry {
    /// The content id (the key of the entry).
    pub content_id: String,
    /// The products file, relative to the mirror root (`None`: metadata only).
    pub path: Option<RelPath>,
    /// The entry's `format` field (normally `products:1.0`).
    pub format: Option<String>,
}

/// A parsed products document with `_aliases` expanded.
#[derive(Debug, Clone, Default)]
pub struct Products {
    /// The top-level fields other than `products` and `_aliases`.
    pub fields: Map<String, Value>,
    /// The products, by name.
    pub products: BTreeMap<String, Product>,
}

/// A product: its fields and its versions.
#[derive(Debug, Clone, Default)]
pub struct Product {
    /// Fields other than `versions`.
    pub fields: Map<String, Value>,
    /// Versions by name. Names compare as plain strings; the greatest is newest.
    pub versions: BTreeMap<String, Version>,
}

/// A version of a product: its fields and its items.
#[derive(Debug, Clone, Default)]
pub struct Version {
    /// Fields other than `items`.
    pub fields: Map<String, Value>,
    /// Items by name, shared: a plan's state holds the versions it takes
    /// from the source document without copying them (change one with
    /// [`Arc::make_mut`]).
    pub items: Arc<BTreeMap<String, Item>>,
}

/// One item: a file to download (when it has a path) and its fields
/// ([`ItemData`], which it dereferences to).
///
/// Cheap to clone, and one pointer in a version's map: the item is shared
/// (a plan's state holds the same items as the source document it comes
/// from).
#[derive(Debug, Clone)]
pub struct Item(Arc<ItemData>);

impl std::ops::Deref for Item {
    type Target = ItemData;
    fn deref(&self) -> &ItemData {
        &self.0
    }
}

/// What an [`Item`] holds.
#[derive(Debug)]
pub struct ItemData {
    /// All fields of the item, as published (see [`Item::fields`]).
    fields: ItemFields,
    /// The checked path of the file, if the item names one.
    pub path: Option<RelPath>,
    /// The expected size in bytes, if given.
    pub size: Option<u64>,
    /// The strongest checksum given, if any.
    pub checksum: Option<Checksum>,
}

/// One item of a products tree as [`Products::items`] yields it: the item
/// and the product and version it belongs to, each with its name.
#[derive(Debug, Clone, Copy)]
pub struct ItemEntry<'a> {
    /// The product's name (its key under `products`).
    pub product_name: &'a str,
    /// The product.
    pub product: &'a Product,
    /// The version's name (its key under `versions`).
    pub version_name: &'a str,
    /// The version.
    pub version: &'a Version,
    /// The item's name (its key under `items`).
    pub item_name: &'a str,
    /// The item.
    pub item: &'a Item,
}

impl ItemEntry<'_> {
    /// How `references.json` and the reference tools name the item:
    /// `<content_id>/<product>/<version>/<item>`.
    pub fn reference(&self, content_id: &str) -> String {
        format!(
            "{content_id}/{}/{}/{}",
            self.product_name, self.version_name, self.item_name
        )
    }
}

/// The fields of an item kept as compact JSON text: one allocation per
/// item. A stream of images.maas.io's size has
/// 19,000 items; as `serde_json` maps (a table, a key and most values
/// allocated apiece) they took 25 MB, as text 4 MB. The engine reads its
/// typed accessors ([`Item::path`], [`Item::size`], [`Item::checksum`]);
/// the fields are parsed back only to write a state, flatten or hold an
/// item.
#[derive(Debug)]
struct ItemFields(Box<str>);

impl ItemFields {
    fn new(fields: &Map<String, Value>) -> ItemFields {
        // A map with string keys always serializes.
        let text = serde_json::to_string(fields).unwrap_or_default();
        ItemFields(text.into())
    }

    fn parse(&self) -> Map<String, Value> {
        // The text is what `new` wrote: a JSON object, parsed back to the
        // same map (numbers and key order included).
        serde_json::from_str(&self.0).unwrap_or_default()
    }
}

/// An expected checksum, lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    /// SHA-512.
    Sha512(String),
    /// SHA-256.
    Sha256(String),
    /// MD5.
    Md5(String),
}

impl Checksum {
    /// The algorithm's name as used in metadata (`sha512`, `sha256`, `md5`).
    pub fn algorithm(&self) -> &'static str {
        match self {
            Checksum::Sha512(_) => "sha512",
            Checksum::Sha256(_) => "sha256",
            Checksum::Md5(_) => "md5",
        }
    }
    /// The expected digest in lower-case hex.
    pub fn hex(&self) -> &str {
        match self {
            Checksum::Sha512(h) | Checksum::Sha256(h) | Checksum::Md5(h) => h,
        }
    }
}

fn parse_json(url: &str, bytes: &[u8]) -> Result<Map<String, Value>> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::metadata(url, format!("malformed JSON: {e}")))?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(Error::metadata(url, "not a JSON object")),
    }
}

fn check_format(url: &str, doc: &Map<String, Value>, want: &str) -> Result<()> {
    match doc.get("format") {
        Some(Value::String(f)) if f == want => Ok(()),
        Some(Value::String(f)) => Err(Error::metadata(
            url,
            format!("unknown format {f:?} (expected {want:?})"),
        )),
        _ => Err(Error::metadata(
            url,
            format!("no \"format\" (expected {want:?})"),
        )),
    }
}

/// Tells an index from a products document by its `format` field.
pub fn document_format(url: &str, bytes: &[u8]) -> Result<String> {
    let members = document_members(url, bytes)?;
    let format = (members.0.iter())
        .find(|(name, _)| name == "format")
        .and_then(|(_, raw)| serde_json::from_str::<Value>(raw.get()).ok());
    match format {
        Some(Value::String(f)) => Ok(f),
        _ => Err(Error::metadata(url, "no \"format\" field")),
    }
}

impl Index {
    /// Parses an index document fetched from `url`.
    pub fn parse(url: &str, bytes: &[u8]) -> Result<Index> {
        let doc = parse_json(url, bytes)?;
        check_format(url, &doc, INDEX_FORMAT)?;
        let Some(Value::Object(index)) = doc.get("index") else {
            return Err(Error::metadata(url, "no \"index\" object"));
        };
        let mut entries = BTreeMap::new();
        for (content_id, entry) in index {
            let Value::Object(entry) = entry else {
                return Err(Error::metadata(
                    url,
                    format!("index entry {content_id:?} is not an object"),
                ));
            };
            let path = path_field(url, &format!("index entry {content_id:?}"), entry)?;
            let format = entry
                .get("format")
                .and_then(Value::as_str)
                .map(str::to_owned);
            entries.insert(
                content_id.clone(),
                IndexEntry {
                    content_id: content_id.clone(),
                    path,
                    format,
                },
            );
        }
        Ok(Index { entries })
    }
}

impl Product {
    /// The newest version and its name: the greatest name as a plain
    /// string, the order [`crate::select::select_versions`] keeps and
    /// removes by and the one clients (and the audit) take as newest.
    pub fn newest(&self) -> Option<(&str, &Version)> {
        self.versions
            .iter()
            .next_back()
            .map(|(name, version)| (name.as_str(), version))
    }
}

impl Products {
    /// Parses a products document fetched from `url`, expanding `_aliases`
    /// and checking every item.
    ///
    /// The document is read level by level from its text (see
    /// [`Members`]): no JSON tree of the whole document is built, and each
    /// item goes from its text straight to an [`Item`].
    pub fn parse(url: &str, bytes: &[u8]) -> Result<Products> {
        let members = document_members(url, bytes)?;
        if let Some((_, raw)) = members.0.iter().find(|(name, _)| name == "format") {
            let format: Value = serde_json::from_str(raw.get())
                .map_err(|e| Error::metadata(url, format!("\"format\": malformed JSON: {e}")))?;
            let fields = Map::from_iter([("format".to_owned(), format)]);
            check_format(url, &fields, PRODUCTS_FORMAT)?;
        } else {
            check_format(url, &Map::new(), PRODUCTS_FORMAT)?;
        }
        read_tree(url, members)
    }
}

/// The tree of a products document or state from its top-level members:
/// the one walker of a products tree, every reader of one comes here.
///
/// Each level (document, product, version) keeps its fields in the order
/// the parsed object has them once its children's key is removed (see
/// [`level_fields`]), a repeated name its first place and last value (see
/// [`Members::deduplicated`]), `_aliases` expanded at every level; each
/// item is checked by [`Item::from_fields`].
fn read_tree(url: &str, members: Members<'_>) -> Result<Products> {
    let (mut doc, products) = level_fields(url, members, "products")?;
    let aliases = match doc.remove("_aliases") {
        None => Map::new(),
        Some(Value::Object(a)) => a,
        Some(_) => return Err(Error::metadata(url, "\"_aliases\" is not an object")),
    };
    expand_aliases(&mut doc, &aliases);
    doc.remove("products");
    let mut tree = BTreeMap::new();
    if let Some(raw) = products {
        for (name, raw) in members_of(url, || "\"products\"".into(), raw)?.0 {
            let product = read_product(url, &name, raw, &aliases)?;
            tree.insert(name, product);
        }
    }
    Ok(Products {
        fields: doc,
        products: tree,
    })
}

impl Products {
    /// Builds the tree of a mirror state (`.data/<content_id>`, no format
    /// required) from its text, read level by level as [`Products::parse`]
    /// reads a document. `Ok(None)`: the text is not a JSON object.
    ///
    /// Also how a products tree is checked where the format is not (a
    /// re-signed document read back, a state file served on a page).
    pub fn parse_state(url: &str, bytes: &[u8]) -> Result<Option<Products>> {
        let raw: &RawValue = serde_json::from_slice(bytes)
            .map_err(|e| Error::metadata(url, format!("malformed mirror state: {e}")))?;
        if !is_object(raw) {
            return Ok(None);
        }
        let members = members_of(url, || "the state".into(), raw)?;
        read_tree(url, members).map(Some)
    }

    /// The content id, if the document names one.
    pub fn content_id(&self) -> Option<&str> {
        self.fields.get("content_id").and_then(Value::as_str)
    }

    /// Every item of every version of every product, in name order
    /// (product, then version, then item), with the names that lead to it.
    pub fn items(&self) -> impl Iterator<Item = ItemEntry<'_>> {
        self.products.iter().flat_map(|(product_name, product)| {
            product
                .versions
                .iter()
                .flat_map(move |(version_name, version)| {
                    version
                        .items
                        .iter()
                        .map(move |(item_name, item)| ItemEntry {
                            product_name,
                            product,
                            version_name,
                            version,
                            item_name,
                            item,
                        })
                })
        })
    }

    /// The tree back as JSON, in the reference's `.data/<content_id>` shape.
    pub fn to_value(&self) -> Value {
        with_children(&self.fields, "products", &self.products, |product| {
            with_children(&product.fields, "versions", &product.versions, |version| {
                with_children(&version.fields, "items", &version.items, |item| {
                    Value::Object(item.fields())
                })
            })
        })
    }

    /// The tree as the reference writes `.data/<content_id>`: JSON with
    /// indent 1 and sorted keys, as [`crate::json::sorted_pretty`] of
    /// [`Products::to_value`] gives, written from the tree as it is (no
    /// copy of it is made: a state is as large as its products file).
    pub fn state_json(&self) -> Vec<u8> {
        crate::json::pretty(&self.state_level())
    }

    /// [`Products::state_json`] written to `w` as it is made (a state is
    /// as large as its products document: megabytes never held at once).
    pub fn write_state_json(&self, w: impl std::io::Write) -> std::io::Result<()> {
        crate::json::write_pretty(&self.state_level(), w)
    }

    fn state_level(&self) -> Level<'_, Children<'_, Product>> {
        Level {
            fields: &self.fields,
            key: "products",
            children: Children(&self.products),
        }
    }
}

/// An object of `fields` plus `children` under `key`, keys sorted, as
/// [`with_children`] then [`crate::json::sorted`] make it.
struct Level<'a, C> {
    fields: &'a Map<String, Value>,
    key: &'static str,
    children: C,
}

impl<C: Serialize> Serialize for Level<'_, C> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut keys: Vec<&str> = self
            .fields
            .keys()
            .map(String::as_str)
            .filter(|k| *k != self.key)
            .collect();
        keys.push(self.key);
        keys.sort_unstable();
        let mut map = s.serialize_map(Some(keys.len()))?;
        for k in keys {
            if k == self.key {
                map.serialize_entry(k, &self.children)?;
            } else if let Some(v) = self.fields.get(k) {
                map.serialize_entry(k, &crate::json::Sorted(v))?;
            }
        }
        map.end()
    }
}

/// The children of one level by name (a `BTreeMap` is in sorted order).
struct Children<'a, T>(&'a BTreeMap<String, T>);

impl Serialize for Children<'_, Product> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(name, p)| {
            let level = Level {
                fields: &p.fields,
                key: "versions",
                children: Children(&p.versions),
            };
            (name, level)
        }))
    }
}

impl Serialize for Children<'_, Version> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(name, v)| {
            let level = Level {
                fields: &v.fields,
                key: "items",
                children: Children(&v.items),
            };
            (name, level)
        }))
    }
}

impl Serialize for Children<'_, Item> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_map(
            self.0
                .iter()
                .map(|(name, item)| (name, OwnedSortedMap(item.fields()))),
        )
    }
}

/// A JSON object serialized with its keys in sorted order, owned (an
/// item's fields, parsed for the serialization).
struct OwnedSortedMap(Map<String, Value>);

impl Serialize for OwnedSortedMap {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        SortedMap(&self.0).serialize(s)
    }
}

/// `fields` as a JSON object with `children` under `key`.
fn with_children<T>(
    fields: &Map<String, Value>,
    key: &str,
    children: &BTreeMap<String, T>,
    child: impl Fn(&T) -> Value,
) -> Value {
    let mut doc = fields.clone();
    let map = children
        .iter()
        .map(|(name, c)| (name.clone(), child(c)))
        .collect();
    doc.insert(key.into(), Value::Object(map));
    Value::Object(doc)
}

/// Merges `_aliases` into a dict: for each `FIELD` in the alias table whose
/// value here is a string `VALUE` with an entry, that entry's pairs are merged
/// in (overriding). Values with no entry are left alone.
fn expand_aliases(dict: &mut Map<String, Value>, aliases: &Map<String, Value>) {
    for (field, table) in aliases {
        let Some(Value::String(value)) = dict.get(field) else {
            continue;
        };
        let Some(Value::Object(pairs)) = table.get(value.as_str()) else {
            continue;
        };
        for (k, v) in pairs.clone() {
            dict.insert(k, v);
        }
    }
}

/// The members of a JSON object in the document's order, each value still
/// its JSON text (borrowed from the document): how a products document is
/// read one level at a time.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Members<'de>, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(member) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// The top-level members of a document (the whole text checked to be
/// JSON first, as parsing it into a tree does).
fn document_members<'a>(url: &str, bytes: &'a [u8]) -> Result<Members<'a>> {
    let raw: &RawValue = serde_json::from_slice(bytes)
        .map_err(|e| Error::metadata(url, format!("malformed JSON: {e}")))?;
    if !is_object(raw) {
        return Err(Error::metadata(url, "not a JSON object"));
    }
    members_of(url, || "the document".into(), raw)
}

fn is_object(raw: &RawValue) -> bool {
    raw.get().trim_start().starts_with('{')
}

/// The members of `raw`, which must be an object (`what` names it).
fn members_of<'a>(url: &str, what: impl Fn() -> String, raw: &'a RawValue) -> Result<Members<'a>> {
    if !is_object(raw) {
        return Err(Error::metadata(url, format!("{} is not an object", what())));
    }
    let members: Members = serde_json::from_str(raw.get())
        .map_err(|e| Error::metadata(url, format!("{}: malformed JSON: {e}", what())))?;
    Ok(members.deduplicated())
}

impl Members<'_> {
    /// A name given twice keeps its first place and its last value, as in
    /// a parsed object.
    fn deduplicated(mut self) -> Self {
        let mut first: std::collections::HashMap<&str, usize> = Default::default();
        let mut repeated = Vec::new();
        for (i, (name, _)) in self.0.iter().enumerate() {
            match first.get(name.as_str()) {
                Some(&at) => repeated.push((at, i)),
                None => {
                    first.insert(name, i);
                }
            }
        }
        if repeated.is_empty() {
            return self;
        }
        for &(at, i) in &repeated {
            self.0[at].1 = self.0[i].1;
        }
        let drop: std::collections::HashSet<usize> = repeated.iter().map(|&(_, i)| i).collect();
        let mut i = 0;
        self.0.retain(|_| {
            i += 1;
            !drop.contains(&(i - 1))
        });
        self
    }
}

/// One level of a products document (the document, a product, a version)
/// as its fields and the text of its children under `key`. The fields are
/// the map parsing the level gives, `key` included (its value a
/// placeholder), so that removing `key` later leaves them in the same
/// order as removing it from the parsed object does (`Map::remove`
/// swaps the last field into its place).
fn level_fields<'a>(
    url: &str,
    members: Members<'a>,
    key: &str,
) -> Result<(Map<String, Value>, Option<&'a RawValue>)> {
    let mut fields = Map::with_capacity(members.0.len());
    let mut children = None;
    for (name, raw) in members.0 {
        let value = if name == key {
            children = Some(raw);
            Value::Null
        } else {
            serde_json::from_str(raw.get())
                .map_err(|e| Error::metadata(url, format!("{name:?}: malformed JSON: {e}")))?
        };
        fields.insert(name, value);
    }
    Ok((fields, children))
}

/// A product (its versions and their items) from its text.
fn read_product(
    url: &str,
    name: &str,
    raw: &RawValue,
    aliases: &Map<String, Value>,
) -> Result<Product> {
    let members = members_of(url, || format!("product {name:?}"), raw)?;
    let (mut fields, versions_raw) = level_fields(url, members, "versions")?;
    expand_aliases(&mut fields, aliases);
    fields.remove("versions");
    let mut versions = BTreeMap::new();
    let Some(versions_raw) = versions_raw else {
        return Ok(Product { fields, versions });
    };
    for (vname, vraw) in members_of(url, || format!("product {name:?} versions"), versions_raw)?.0 {
        let version = read_version(url, &format!("{name} {vname}"), vraw, aliases)?;
        versions.insert(vname, version);
    }
    Ok(Product { fields, versions })
}

/// A version (its items) from its text; `context` is `<product> <version>`.
fn read_version(
    url: &str,
    context: &str,
    raw: &RawValue,
    aliases: &Map<String, Value>,
) -> Result<Version> {
    let members = members_of(url, || format!("version {context:?}"), raw)?;
    let (mut fields, items_raw) = level_fields(url, members, "items")?;
    expand_aliases(&mut fields, aliases);
    fields.remove("items");
    let mut items = BTreeMap::new();
    if let Some(items_raw) = items_raw {
        for (iname, iraw) in members_of(url, || format!("version {context:?} items"), items_raw)?.0
        {
            let item = read_item(url, &format!("{context} {iname}"), iraw, aliases)?;
            items.insert(iname, item);
        }
    }
    Ok(Version {
        fields,
        items: Arc::new(items),
    })
}

/// An item from its text, straight to an [`Item`] (no level below it);
/// `context` is `<product> <version> <item>`.
fn read_item(
    url: &str,
    context: &str,
    raw: &RawValue,
    aliases: &Map<String, Value>,
) -> Result<Item> {
    if !is_object(raw) {
        return Err(Error::metadata(
            url,
            format!("item {context} is not an object"),
        ));
    }
    let mut fields: Map<String, Value> = serde_json::from_str(raw.get())
        .map_err(|e| Error::metadata(url, format!("item {context}: malformed JSON: {e}")))?;
    expand_aliases(&mut fields, aliases);
    Item::from_fields(url, context, fields)
}

impl Item {
    /// All fields of the item, as published (in the document's order,
    /// `_aliases` expanded): parsed anew on each call.
    pub fn fields(&self) -> Map<String, Value> {
        self.fields.parse()
    }

    /// The field `key`, if the item has it.
    pub fn field(&self, key: &str) -> Option<Value> {
        self.fields().remove(key)
    }

    /// Checks an item's path, size and checksums. `context` names the item
    /// (product, version, item) in error messages.
    pub fn from_fields(url: &str, context: &str, fields: Map<String, Value>) -> Result<Item> {
        let bad = |reason: String| Error::metadata(url, format!("item {context}: {reason}"));
        let path = path_field(url, &format!("item {context}"), &fields)?;
        let size = match fields.get("size") {
            None => None,
            Some(v) => Some(parse_size(v).ok_or_else(|| bad(format!("invalid size {v}")))?),
        };
        let mut checksum = None;
        for algorithm in ["md5", "sha256", "sha512"] {
            let Some(v) = fields.get(algorithm) else {
                continue;
            };
            let hex = v
                .as_str()
                .ok_or_else(|| bad(format!("{algorithm} is not a string")))?;
            let want_len = match algorithm {
                "md5" => 32,
                "sha256" => 64,
                _ => 128,
            };
            if hex.len() != want_len || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format!(
                    "{algorithm} {hex:?} is not a {want_len}-digit hex digest"
                )));
            }
            let hex = hex.to_ascii_lowercase();
            checksum = Some(match algorithm {
                "md5" => Checksum::Md5(hex),
                "sha256" => Checksum::Sha256(hex),
                _ => Checksum::Sha512(hex),
            });
        }
        Ok(Item(Arc::new(ItemData {
            fields: ItemFields::new(&fields),
            path,
            size,
            checksum,
        })))
    }
}

/// The checked `path` of an index entry or item (`what` names it).
fn path_field(url: &str, what: &str, fields: &Map<String, Value>) -> Result<Option<RelPath>> {
    match fields.get("path") {
        None => Ok(None),
        Some(Value::String(p)) => RelPath::parse(p).map(Some).map_err(|e| Error::UnsafePath {
            context: format!("{url}: {what}"),
            path: p.clone(),
            reason: e.to_string(),
        }),
        Some(_) => Err(Error::metadata(
            url,
            format!("{what}: \"path\" is not a string"),
        )),
    }
}

/// Sizes are non-negative integers, given as JSON numbers or decimal strings.
fn parse_size(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A scalar JSON value rendered as the reference renders it in flattened
/// items and query output; `None` for lists, objects and null.
pub fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(true) => Some("True".into()),
        Value::Bool(false) => Some("False".into()),
        _ => None,
    }
}

/// The flattened view of one item: the scalar fields of the document, the
/// product, the version and the item (later levels override earlier ones,
/// keeping the first position, as a Python dict update does), with
/// `product_name`, `version_name` and `item_name` after their level's fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlatItem(Vec<(String, String)>);

impl FlatItem {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `key`, replacing a value in place or appending.
    pub fn insert(&mut self, key: &str, value: String) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }

    /// The pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    fn add_scalars(&mut self, fields: &Map<String, Value>) {
        for (k, v) in fields {
            if let Some(s) = scalar_string(v) {
                self.insert(k, s);
            }
        }
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for FlatItem {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut flat = FlatItem::default();
        for (k, v) in iter {
            flat.insert(&k.into(), v.into());
        }
        flat
    }
}

/// Flattens one item of `products` (see [`FlatItem`]).
pub fn flatten(products: &Products, product: &str, version: &str, item: &str) -> FlatItem {
    let mut flat = FlatItem::default();
    flat.add_scalars(&products.fields);
    let p = products.products.get(product);
    if let Some(p) = p {
        flat.add_scalars(&p.fields);
    }
    flat.insert("product_name", product.into());
    let v = p.and_then(|p| p.versions.get(version));
    if let Some(v) = v {
        flat.add_scalars(&v.fields);
    }
    flat.insert("version_name", version.into());
    if let Some(i) = v.and_then(|v| v.items.get(item)) {
        flat.add_scalars(&i.fields());
    }
    flat.insert("item_name", item.into());
    flat
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_json_is_the_sorted_tree() {
        let doc = r#"{"format": "products:1.0", "content_id": "c:1", "z": {"b": [{"d": 1, "c": 2}], "a": null},
          "products": {"q": {"versions": {}}, "p": {"zz": 1, "aa": "x", "products": "not a child",
            "versions": {"2": {"items": {}}, "1": {"b": 1, "items": {
              "y": {"path": "a/y", "size": 3, "z": [3, {"y": 1, "x": 2}]}, "x": {"path": "a/x", "size": 1}}}}}}}"#;
        let tree = Products::parse("u", doc.as_bytes()).unwrap();
        let want = crate::json::sorted_pretty(&tree.to_value());
        assert_eq!(
            String::from_utf8(tree.state_json()).unwrap(),
            String::from_utf8(want).unwrap()
        );
        let dir = tempfile::tempdir().unwrap();
        let spec = crate::sample::SampleSpec {
            aliases: true,
            ..Default::default()
        };
        crate::sample::generate(&spec, dir.path(), None).unwrap();
        let v1 = dir.path().join("streams/v1");
        for entry in std::fs::read_dir(&v1).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            if document_format("u", &bytes).unwrap() != PRODUCTS_FORMAT {
                continue;
            }
            let tree = Products::parse("u", &bytes).unwrap();
            assert_eq!(
                tree.state_json(),
                crate::json::sorted_pretty(&tree.to_value()),
                "{}",
                path.display()
            );
        }
    }

    /// A straightforward walk of the parsed object, written for the test
    /// alone: what the level-by-level walker must give. Fields keep the
    /// order the parsed object has once the children's key is removed
    /// (`Map::remove` swaps the last field into the removed one's place),
    /// a repeated name keeps its first place and last value (as parsing
    /// gives it), `_aliases` are expanded at every level, each item is
    /// checked.
    fn reference_tree(url: &str, text: &str) -> Result<Products> {
        let Value::Object(mut doc) = serde_json::from_str(text).expect("a JSON object") else {
            panic!("not a JSON object: {text}");
        };
        let aliases = match doc.remove("_aliases") {
            None => Map::new(),
            Some(Value::Object(a)) => a,
            Some(_) => return Err(Error::metadata(url, "\"_aliases\" is not an object")),
        };
        expand_aliases(&mut doc, &aliases);
        let products_value = doc.remove("products");
        let mut products = BTreeMap::new();
        for (name, value) in children(url, "\"products\"".into(), products_value)? {
            let mut fields = object(url, format!("product {name:?}"), value)?;
            expand_aliases(&mut fields, &aliases);
            let versions_value = fields.remove("versions");
            let mut versions = BTreeMap::new();
            let what = format!("product {name:?} versions");
            for (vname, value) in children(url, what, versions_value)? {
                let context = format!("{name} {vname}");
                let mut vfields = object(url, format!("version {context:?}"), value)?;
                expand_aliases(&mut vfields, &aliases);
                let items_value = vfields.remove("items");
                let mut items = BTreeMap::new();
                let what = format!("version {context:?} items");
                for (iname, value) in children(url, what, items_value)? {
                    let context = format!("{context} {iname}");
                    let mut ifields = object(url, format!("item {context}"), value)?;
                    expand_aliases(&mut ifields, &aliases);
                    items.insert(iname, Item::from_fields(url, &context, ifields)?);
                }
                let items = Arc::new(items);
                versions.insert(
                    vname,
                    Version {
                        fields: vfields,
                        items,
                    },
                );
            }
            products.insert(name, Product { fields, versions });
        }
        Ok(Products {
            fields: doc,
            products,
        })
    }

    fn object(url: &str, what: String, value: Value) -> Result<Map<String, Value>> {
        match value {
            Value::Object(m) => Ok(m),
            _ => Err(Error::metadata(url, format!("{what} is not an object"))),
        }
    }

    /// The children under a level's key: none when the key is absent.
    fn children(url: &str, what: String, value: Option<Value>) -> Result<Map<String, Value>> {
        value.map_or_else(|| Ok(Map::new()), |v| object(url, what, v))
    }

    /// The tree read level by level from the text (documents and states)
    /// is the one [`reference_tree`] walks from the parsed object: fields
    /// in the same order, a repeated name's last value, aliases expanded,
    /// the same first error.
    #[test]
    fn reading_level_by_level_gives_the_tree_of_the_parsed_object() {
        let reordered = r#"{"products": {"p": {"versions": {"1": {"items": {
              "i": {"path": "a/i", "size": 1, "ftype": "x", "path": "a/j"}}, "label": "x", "z": 1}},
              "arch": "amd64", "release": "xenial", "versions": {"2": {"items": {"k": {"path": "a/k"}}}}}},
            "format": "products:1.0", "content_id": "c:1", "_aliases": {"release": {"xenial": {"version": "16.04"}}},
            "updated": "u", "content_id": "c:2", "products": {"q": {"zz": 1, "versions": {}}, "p": {"versions": {"1": {"items": {"i": {}}}}, "arch": "arm64"}}}"#;
        let dir = tempfile::tempdir().unwrap();
        let spec = crate::sample::SampleSpec {
            aliases: true,
            ..Default::default()
        };
        crate::sample::generate(&spec, dir.path(), None).unwrap();
        let mut docs = vec![SMALL.to_owned(), reordered.to_owned()];
        for entry in std::fs::read_dir(dir.path().join("streams/v1")).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            if document_format("u", text.as_bytes()).unwrap() == PRODUCTS_FORMAT {
                docs.push(text);
            }
        }
        let order = |m: &Map<String, Value>| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
        };
        for doc in &docs {
            let read = Products::parse("u", doc.as_bytes()).unwrap();
            let built = reference_tree("u", doc).unwrap();
            assert_eq!(read.state_json(), built.state_json(), "{doc}");
            assert_eq!(order(&read.fields), order(&built.fields), "{doc}");
            assert_eq!(read.items().count(), built.items().count());
            for (r, b) in read.items().zip(built.items()) {
                assert_eq!(order(&r.product.fields), order(&b.product.fields));
                assert_eq!(order(&r.version.fields), order(&b.version.fields));
                assert_eq!(order(&r.item.fields()), order(&b.item.fields()));
                assert_eq!((&r.item.path, r.item.size), (&b.item.path, b.item.size));
                let flat = |t| flatten(t, b.product_name, b.version_name, b.item_name);
                assert_eq!(flat(&read), flat(&built));
            }
            let state = Products::parse_state("u", &built.state_json())
                .unwrap()
                .unwrap();
            assert_eq!(state.state_json(), built.state_json());
            let state = Products::parse_state("u", doc.as_bytes()).unwrap().unwrap();
            assert_eq!(order(&state.fields), order(&built.fields), "{doc}");
        }
        let read = Products::parse("u", reordered.as_bytes()).unwrap();
        assert_eq!(
            read.content_id(),
            Some("c:2"),
            "the last value of a repeated name"
        );
        let p = &read.products["p"];
        assert_eq!(p.fields["arch"], "arm64");
        assert!(Products::parse_state("u", b"[]").unwrap().is_none());
        assert!(Products::parse_state("u", b"{").is_err());
    }

    /// A tree that is not one fails with the reference walk's error, the
    /// first in the document's order.
    #[test]
    fn reading_level_by_level_fails_as_the_parsed_object_does() {
        let items = |items: &str| {
            format!(r#"{{"products": {{"p": {{"versions": {{"1": {{"items": {items}}}}}}}}}}}"#)
        };
        let mut cases = vec![
            (
                r#"{"_aliases": []}"#.to_owned(),
                "\"_aliases\" is not an object",
            ),
            (
                r#"{"products": []}"#.into(),
                "\"products\" is not an object",
            ),
            (
                r#"{"products": null}"#.into(),
                "\"products\" is not an object",
            ),
            (
                r#"{"products": {"p": 1}}"#.into(),
                "product \"p\" is not an object",
            ),
            (
                r#"{"products": {"p": {}, "q": 1, "r": []}}"#.into(),
                "product \"q\" is not an object",
            ),
            (
                r#"{"products": {"p": {}, "p": 2}}"#.into(),
                "product \"p\" is not an object",
            ),
            (
                r#"{"products": {"p": {"versions": "x"}}}"#.into(),
                "product \"p\" versions is not an object",
            ),
            (
                r#"{"products": {"p": {"versions": {"1": []}}}}"#.into(),
                "version \"p 1\" is not an object",
            ),
            (items("3"), "version \"p 1\" items is not an object"),
            (items(r#"{"i": "s"}"#), "item p 1 i is not an object"),
            (items(r#"{"i": {"path": "../x"}}"#), "unsafe path"),
            (
                items(r#"{"i": {"size": -1}}"#),
                "item p 1 i: invalid size -1",
            ),
            (
                items(r#"{"i": {"path": "a", "path": "/etc/x"}}"#),
                "unsafe path",
            ),
        ];
        let aliased = r#"{"_aliases": {"ftype": {"k": {"size": "big"}}},
            "products": {"p": {"versions": {"1": {"items": {"i": {"ftype": "k"}}}}}}}"#;
        cases.push((aliased.into(), "item p 1 i: invalid size \"big\""));
        for (doc, want) in &cases {
            let read = Products::parse_state("http://h/s", doc.as_bytes())
                .unwrap_err()
                .to_string();
            let reference = reference_tree("http://h/s", doc).unwrap_err().to_string();
            assert_eq!(read, reference, "{doc}");
            assert!(read.contains(want), "{doc}: {read}");
            assert!(read.starts_with("http://h/s"), "{read}");
        }
        let repaired = r#"{"products": {"p": 1, "p": {"versions": {}}}}"#;
        let read = Products::parse_state("u", repaired.as_bytes()).unwrap();
        assert_eq!(read.unwrap().products.len(), 1, "the last value counts");
        assert!(reference_tree("u", repaired).is_ok());
    }

    const SMALL: &str = r#"{
      "format": "products:1.0", "content_id": "c:1", "datatype": "image-ids",
      "updated": "Thu, 24 Jul 2025 09:01:43 +0000", "license": ["x"],
      "_aliases": {"release": {"xenial": {"release_title": "16.04 LTS", "version": "16.04"}}},
      "products": {
        "p1": {"arch": "amd64", "release": "xenial", "release_title": "old", "n": 3, "b": true,
          "versions": {"20250101": {"label": "stable", "items": {
            "k": {"ftype": "boot-kernel", "path": "x/k", "size": 10, "md5": "0123456789abcdef0123456789ABCDEF",
                  "sha256": "0000000000000000000000000000000000000000000000000000000000000000"},
            "meta": {"ftype": "meta"}
          }}}}
      }}"#;

    #[test]
    fn parses_and_expands_aliases() {
        let p = Products::parse("u", SMALL.as_bytes()).unwrap();
        assert_eq!(p.content_id(), Some("c:1"));
        let prod = &p.products["p1"];
        assert_eq!(prod.fields["release_title"], "16.04 LTS", "alias overrides");
        assert_eq!(prod.fields["version"], "16.04");
        let item = &prod.versions["20250101"].items["k"];
        assert_eq!(item.path.as_ref().unwrap().as_str(), "x/k");
        assert_eq!(item.size, Some(10));
        assert_eq!(
            item.checksum,
            Some(Checksum::Sha256("0".repeat(64))),
            "strongest wins"
        );
        assert!(prod.versions["20250101"].items["meta"].path.is_none());
        assert!(!p.to_value().as_object().unwrap().contains_key("_aliases"));
    }

    #[test]
    fn items_walks_every_level_in_name_order() {
        let doc = r#"{"format":"products:1.0","products":{
            "b":{"versions":{"2":{"items":{"y":{"path":"b/2/y"},"x":{}}},"1":{"items":{}}}},
            "a":{"versions":{"1":{"items":{"z":{"path":"a/1/z","size":1}}}}},
            "c":{}}}"#;
        let p = Products::parse("u", doc.as_bytes()).unwrap();
        let seen: Vec<(&str, &str, &str, Option<&str>)> = p
            .items()
            .map(|e| {
                let path = e.item.path.as_ref().map(RelPath::as_str);
                (e.product_name, e.version_name, e.item_name, path)
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("a", "1", "z", Some("a/1/z")),
                ("b", "2", "x", None),
                ("b", "2", "y", Some("b/2/y")),
            ]
        );
        let first = p.items().next().unwrap();
        assert_eq!(first.reference("c:1"), "c:1/a/1/z");
        assert!(std::ptr::eq(first.product, &p.products["a"]));
        assert_eq!(first.version.items.len(), 1);
        assert_eq!(Products::default().items().count(), 0);
    }

    #[test]
    fn flattens_levels_in_order() {
        let p = Products::parse("u", SMALL.as_bytes()).unwrap();
        let f = flatten(&p, "p1", "20250101", "k");
        assert_eq!(f.get("content_id"), Some("c:1"));
        assert_eq!(f.get("arch"), Some("amd64"));
        assert_eq!(f.get("label"), Some("stable"));
        assert_eq!(f.get("size"), Some("10"));
        assert_eq!(f.get("n"), Some("3"));
        assert_eq!(f.get("b"), Some("True"));
        assert_eq!(f.get("product_name"), Some("p1"));
        assert_eq!(f.get("version_name"), Some("20250101"));
        assert_eq!(f.get("item_name"), Some("k"));
        assert_eq!(f.get("license"), None, "lists are left out");
        assert_eq!(f.get("versions"), None);
        let keys: Vec<&str> = f.iter().map(|(k, _)| k).collect();
        let pos = |k: &str| keys.iter().position(|x| *x == k).unwrap();
        assert!(pos("content_id") < pos("arch"));
        assert!(pos("arch") < pos("product_name"));
        assert!(pos("product_name") < pos("label"));
        assert!(pos("label") < pos("version_name"));
        assert!(pos("version_name") < pos("ftype"));
        assert_eq!(keys.last(), Some(&"item_name"));
    }

    #[test]
    fn rejects_bad_documents() {
        let cases = [
            ("{", "malformed JSON"),
            ("[]", "not a JSON object"),
            (r#"{"format":"products:2.0"}"#, "unknown format"),
            (r#"{"products":{}}"#, "no \"format\""),
            (
                r#"{"format":"products:1.0","products":{"p":{"versions":{"v":{"items":{"i":{"path":"../x"}}}}}}}"#,
                "unsafe path",
            ),
            (
                r#"{"format":"products:1.0","products":{"p":{"versions":{"v":{"items":{"i":{"path":"x","size":-1}}}}}}}"#,
                "invalid size",
            ),
            (
                r#"{"format":"products:1.0","products":{"p":{"versions":{"v":{"items":{"i":{"path":"x","sha256":"zz"}}}}}}}"#,
                "hex digest",
            ),
            (
                r#"{"format":"products:1.0","products":[]}"#,
                "not an object",
            ),
        ];
        for (doc, want) in cases {
            let err = Products::parse("http://h/p.json", doc.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{doc}: {err}");
            assert!(err.contains("http://h/p.json"), "{err}");
        }
    }

    #[test]
    fn parses_the_real_index() {
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/maas-real/index.json"
        ))
        .expect("tests/fixtures/maas-real is part of the repository");
        let idx = Index::parse("index.json", &bytes).unwrap();
        assert_eq!(idx.entries.len(), 3);
        let e = &idx.entries["com.ubuntu.maas:stable:v3:download"];
        assert_eq!(
            e.path.as_ref().unwrap().as_str(),
            "streams/v1/com.ubuntu.maas:stable:v3:download.json"
        );
    }
}
