//! How a dry run shows a [`Plan`]: the reference's lines (integer `Mb`,
//! what the drop-in `sstream-mirror` and `sstream sync` print), the same
//! lines with sizes in human units (`sstream mirror`), or one JSON document
//! (`--dry-run --json`).
//!
//! # The JSON document
//!
//! ```text
//! { "actions": [ { "kind": "fetch" | "link" | "verify" | "delete",
//!                  "path": "xenial/amd64/20250718/squashfs",
//!                  "bytes": 12345 | null,
//!                  "content_id": ..., "product": ..., "version": ...,
//!                  "item": ... (each null when no planned item names the path),
//!                  "link_from": "other/path" (link only) }, ... ],
//!   "totals": { "fetch": {"files": N, "bytes": N}, "link": {...},
//!               "verify": {...}, "delete": {...}, "change_bytes": N },
//!   "space": { "need": N, "staged": N, "free": N, "margin": N,
//!              "filesystem": "/", "fits": true } | null }
//! ```
//!
//! `fetch`: transferred from the source; `link`: linked to identical
//! content already stored or fetched in this run (not downloaded);
//! `verify`: a file already there, checked and fetched again only when
//! wrong; `delete`: removed once the new metadata is published (after the
//! delete delay). Downloads come largest first, then deletions in path order.

use serde_json::{Value, json};
use simplestreams::plan::{Origin, Plan, PlannedItem};
use simplestreams::units::human_size;
use std::collections::BTreeMap;

/// How a dry run prints its plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanFormat {
    /// The reference's lines, sizes in whole `Mb` (the drop-in, `sync`).
    Reference,
    /// The same lines, sizes in human units (`12.4 MiB`).
    Human,
    /// One JSON document (see the module documentation).
    Json,
}

/// What kind of work an action of the plan is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    /// Transferred from the source.
    Fetch,
    /// Linked to identical content (not downloaded).
    Link,
    /// Checked in place (fetched again only when wrong).
    Verify,
    /// Removed after publishing.
    Delete,
}

impl ActionKind {
    const ALL: [ActionKind; 4] = [
        ActionKind::Fetch,
        ActionKind::Link,
        ActionKind::Verify,
        ActionKind::Delete,
    ];

    /// Its name in the JSON document.
    pub fn name(self) -> &'static str {
        match self {
            ActionKind::Fetch => "fetch",
            ActionKind::Link => "link",
            ActionKind::Verify => "verify",
            ActionKind::Delete => "delete",
        }
    }
}

/// The lines of a plan in `format` ([`PlanFormat::Json`]: one line, the
/// document).
pub fn render(plan: &Plan, format: PlanFormat) -> Vec<String> {
    match format {
        PlanFormat::Reference => plan.report(),
        PlanFormat::Human => human_lines(plan),
        PlanFormat::Json => vec![to_json(plan).to_string()],
    }
}

/// The reference's lines with sizes in human units.
fn human_lines(plan: &Plan) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = |sign: char, it: &PlannedItem| {
        if let (Some(path), Some(size)) = (&it.path, it.size) {
            lines.push(format!(
                "{sign} {} {} {} {path} {}",
                it.product,
                it.version,
                it.item,
                human_size(size)
            ));
        }
    };
    plan.streams
        .iter()
        .for_each(|sp| sp.added.iter().for_each(|it| line('+', it)));
    plan.streams
        .iter()
        .for_each(|sp| sp.removed.iter().for_each(|it| line('-', it)));
    let (new, gone) = (plan.new_bytes(), plan.deletion_bytes);
    let change = if new >= gone {
        format!("+{}", human_size(new - gone))
    } else {
        format!("-{}", human_size(gone - new))
    };
    lines.push(format!(
        "change: {change} ({} to write, {} to delete)",
        human_size(new),
        human_size(gone)
    ));
    let (files, bytes) = plan.stored_once();
    if files > 0 {
        lines.push(format!(
            "stored once: {files} file(s) linked to identical content, {} not downloaded",
            human_size(bytes)
        ));
    }
    if let Some(space) = &plan.space {
        lines.push(space.line());
    }
    lines
}

/// The plan as one JSON document (see the module documentation).
pub fn to_json(plan: &Plan) -> Value {
    let items = items_by_path(plan);
    let mut actions = Vec::new();
    let mut totals: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut push = |kind: ActionKind, path: &str, bytes: Option<u64>, from: Option<String>| {
        let total = totals.entry(kind.name()).or_default();
        total.0 += 1;
        total.1 += bytes.unwrap_or(0);
        let item = items.get(path);
        let mut action = json!({
            "kind": kind.name(),
            "path": path,
            "bytes": bytes,
            "content_id": item.map(|i| &*i.content_id),
            "product": item.map(|i| &*i.product),
            "version": item.map(|i| &*i.version),
            "item": item.map(|i| &*i.item),
        });
        if let (Some(from), Some(map)) = (from, action.as_object_mut()) {
            map.insert("link_from".into(), Value::String(from));
        }
        actions.push(action);
    };
    for d in &plan.downloads {
        let (kind, from) = match (&d.origin, d.verify_only) {
            (_, true) => (ActionKind::Verify, None),
            (Origin::Fetch, false) => (ActionKind::Fetch, None),
            (Origin::Twin(p) | Origin::Stored(p), false) => (ActionKind::Link, Some(p.to_string())),
            (Origin::Indexed(p), false) => (ActionKind::Link, Some(p.display().to_string())),
        };
        push(kind, d.path.as_str(), d.expected.size, from);
    }
    for path in &plan.deletions {
        let bytes = items.get(path.as_str()).and_then(|i| i.size);
        push(ActionKind::Delete, path.as_str(), bytes, None);
    }
    let mut total = serde_json::Map::new();
    for kind in ActionKind::ALL {
        let (files, bytes) = totals.get(kind.name()).copied().unwrap_or_default();
        total.insert(kind.name().into(), json!({"files": files, "bytes": bytes}));
    }
    total.insert(
        "change_bytes".into(),
        json!(plan.new_bytes() as i128 - plan.deletion_bytes as i128),
    );
    let space = plan.space.as_ref().map(|s| {
        json!({
            "need": s.need,
            "staged": s.staged,
            "free": s.free,
            "margin": s.margin,
            "filesystem": s.filesystem,
            "fits": s.fits(),
        })
    });
    json!({"actions": actions, "totals": total, "space": space})
}

/// The planned items by path: added and re-spun ones first, removed ones
/// for paths no kept item names.
fn items_by_path(plan: &Plan) -> BTreeMap<&str, &PlannedItem> {
    let mut items = BTreeMap::new();
    for sp in &plan.streams {
        let current = sp.added.iter().chain(sp.respun.iter().map(|r| &r.new));
        for it in current {
            if let Some(path) = &it.path {
                items.entry(path.as_str()).or_insert(it);
            }
        }
    }
    for sp in &plan.streams {
        for it in &sp.removed {
            if let Some(path) = &it.path {
                items.entry(path.as_str()).or_insert(it);
            }
        }
    }
    items
}
