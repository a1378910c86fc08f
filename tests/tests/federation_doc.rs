//! `docs/FEDERATION.md` tells other servers what Chorus does with each
//! activity; this fails when its tables and the code disagree.
//!
//! Every row of the Inbound table is built into a minimal activity of its
//! type, with an object of each type the row lists, and the interpreter must
//! act on it; every row of "Stored but not acted on (yet)" must come back
//! `Unsupported`. Each activity type the code recognises must be in exactly
//! one of those two tables, and the Outbound table must list exactly the
//! types Chorus builds for local actions.

use std::collections::BTreeSet;

use chorus_domain::inbound::{Interpretation, interpret, read_activity};
use serde_json::{Value, json};

const DOC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/FEDERATION.md");

const INBOUND: &str = "Inbound";
const NOT_ACTED_ON: &str = "Stored but not acted on (yet)";
const OUTBOUND: &str = "Outbound";

/// The activity types the interpreter acts on.
const ACTED_ON_TYPES: &[&str] = &[
    "Create", "Update", "Delete", "Follow", "Accept", "Reject", "Like", "Announce", "Undo", "Block",
];

/// The activity types the documentation names as stored but not acted on.
/// The interpreter reports every type outside `ACTED_ON_TYPES` as
/// unsupported; these are the ones worth telling other servers about.
const NOT_ACTED_ON_TYPES: &[&str] = &[
    "EmojiReact",
    "Move",
    "Flag",
    "Add",
    "Remove",
    "Join",
    "Leave",
    "Invite",
    "Lock",
    "Dislike",
    "Offer",
    "TentativeAccept",
    "TentativeReject",
    "Ignore",
    "Listen",
    "Read",
    "View",
    "Arrive",
    "Travel",
    "Bite",
];

/// The activity types the domain builds for local actions (posts,
/// relationships and interactions).
const OUTBOUND_TYPES: &[&str] = &[
    "Create", "Update", "Delete", "Follow", "Accept", "Reject", "Undo", "Like", "Announce", "Block",
];

/// The remote actor performing every activity built here.
const ACTOR: &str = "https://remote.example/users/bob";
/// A post or other object on the remote actor's server.
const OBJECT: &str = "https://remote.example/objects/1";
/// A local account, the object of follows and blocks.
const LOCAL: &str = "https://chorus.example/users/alice";
const PUBLIC: &str = "https://www.w3.org/ns/activitystreams#Public";

const ACTOR_TYPES: &[&str] = &["Person", "Service", "Group", "Application", "Organization"];

/// One row of a `| Activity | Object | Effect |` table.
#[derive(Debug)]
struct Row {
    activity: String,
    objects: Vec<String>,
    effect: String,
}

fn doc() -> String {
    std::fs::read_to_string(DOC_PATH).unwrap_or_else(|e| panic!("cannot read {DOC_PATH}: {e}"))
}

/// The rows of the first table after the heading whose text is `heading`.
fn table(doc: &str, heading: &str) -> Vec<Row> {
    let mut lines = doc.lines().skip_while(|line| !is_heading(line, heading));
    assert!(
        lines.next().is_some(),
        "docs/FEDERATION.md has no heading `{heading}`"
    );
    let mut lines = lines.skip_while(|line| {
        assert!(
            !line.starts_with('#'),
            "the section `{heading}` of docs/FEDERATION.md has no table before `{line}`"
        );
        !line.trim_start().starts_with('|')
    });
    let header = lines
        .next()
        .unwrap_or_else(|| panic!("the section `{heading}` of docs/FEDERATION.md has no table"));
    assert_eq!(
        cells(header),
        ["Activity", "Object", "Effect"],
        "the table of `{heading}` must have the columns | Activity | Object | Effect |"
    );
    let separator = lines.next().unwrap_or_default();
    assert!(
        cells(separator)
            .iter()
            .all(|c| !c.is_empty() && c.chars().all(|ch| matches!(ch, '-' | ':'))),
        "the table of `{heading}` has no separator row under its header"
    );
    let rows: Vec<Row> = lines
        .take_while(|line| line.trim_start().starts_with('|'))
        .map(|line| row(heading, line))
        .collect();
    assert!(!rows.is_empty(), "the table of `{heading}` has no rows");
    rows
}

fn is_heading(line: &str, heading: &str) -> bool {
    line.starts_with('#') && line.trim_start_matches('#').trim() == heading
}

/// The cells of a table line, trimmed.
fn cells(line: &str) -> Vec<String> {
    let line = line.trim();
    let line = line.strip_prefix('|').unwrap_or(line);
    let line = line.strip_suffix('|').unwrap_or(line);
    line.split('|').map(|c| c.trim().to_owned()).collect()
}

fn row(heading: &str, line: &str) -> Row {
    let cells = cells(line);
    let [activity, object, effect] = cells.as_slice() else {
        panic!("a row of `{heading}` must have three cells (no `|` inside them): {line}");
    };
    let activity = activity.trim_matches('`').to_owned();
    assert!(
        is_type_name(&activity),
        "the Activity of a row of `{heading}` must be one type name, not `{activity}`"
    );
    let objects = object_types(object);
    assert!(
        !objects.is_empty() && objects.iter().all(|o| is_type_name(o)),
        "the Object of `{activity}` in `{heading}` must list type names, \
         separated by commas, optionally followed by a note in parentheses: `{object}`"
    );
    assert!(
        !effect.is_empty(),
        "the row of `{activity}` in `{heading}` says nothing of its effect"
    );
    Row {
        activity,
        objects,
        effect: effect.clone(),
    }
}

/// The type names of an Object cell: `Note, Article or Page (a note)`
/// names Note, Article and Page.
fn object_types(cell: &str) -> Vec<String> {
    let mut depth = 0_u32;
    let mut outside = String::new();
    for c in cell.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth == 0 => outside.push(c),
            _ => {}
        }
    }
    outside
        .replace(" or ", ",")
        .split(',')
        .map(|t| t.trim().trim_matches('`').to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

fn is_type_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && name.chars().all(|c| c.is_ascii_alphanumeric())
}

fn is_actor_type(name: &str) -> bool {
    ACTOR_TYPES.contains(&name)
}

/// A minimal valid activity of type `kind` by [`ACTOR`] on an object of
/// type `object_type`, shaped the way that type is sent in practice.
fn activity(kind: &str, object_type: &str) -> Value {
    let object = match kind {
        "Create" | "Update" if is_actor_type(object_type) => {
            json!({"id": ACTOR, "type": object_type, "inbox": format!("{ACTOR}/inbox")})
        }
        "Create" | "Update" => json!({
            "id": OBJECT,
            "type": object_type,
            "attributedTo": ACTOR,
            "content": "<p>Hello</p>",
            "to": [PUBLIC],
        }),
        // Deleting an actor: the actor deletes itself.
        "Delete" if is_actor_type(object_type) => json!({"id": ACTOR, "type": object_type}),
        // Answering a local account's activity, such as its Follow.
        "Accept" | "Reject" => json!({
            "id": "https://chorus.example/activities/1",
            "type": object_type,
            "actor": LOCAL,
            "object": ACTOR,
        }),
        // Taking back one of the actor's own activities.
        "Undo" => json!({
            "id": "https://remote.example/activities/0",
            "type": object_type,
            "actor": ACTOR,
            "object": LOCAL,
        }),
        _ if is_actor_type(object_type) => json!({"id": LOCAL, "type": object_type}),
        _ => json!({"id": OBJECT, "type": object_type}),
    };
    let mut activity = json!({
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": "https://remote.example/activities/1",
        "type": kind,
        "actor": ACTOR,
        "object": object,
        "to": [PUBLIC],
    });
    if kind == "EmojiReact" {
        activity["content"] = json!("👍");
    }
    activity
}

/// Checks that the interpreter acts on (`acted_on`) or only stores an
/// activity of `kind` with an object of `object_type`.
fn check(kind: &str, object_type: &str, acted_on: bool) {
    let value = activity(kind, object_type);
    let read = read_activity(&value)
        .unwrap_or_else(|e| panic!("a {kind} of a {object_type} is refused by the inbox: {e}"));
    let interpretation =
        interpret(&read).unwrap_or_else(|e| panic!("a {kind} of a {object_type} is refused: {e}"));
    match (&interpretation, acted_on) {
        (Interpretation::Unsupported { reason, .. }, true) => panic!(
            "docs/FEDERATION.md says Chorus acts on a {kind} of a {object_type}, \
             but the interpreter does not ({reason})"
        ),
        (Interpretation::Unsupported { .. }, false) => {}
        (_, false) => panic!(
            "docs/FEDERATION.md says a {kind} of a {object_type} is stored but not acted on, \
             but the interpreter reads it as {}",
            interpretation.name()
        ),
        (_, true) => {}
    }
}

fn types(rows: &[Row]) -> BTreeSet<&str> {
    rows.iter().map(|r| r.activity.as_str()).collect()
}

#[test]
fn the_inbound_table_lists_what_the_interpreter_acts_on() {
    let doc = doc();
    for row in table(&doc, INBOUND) {
        for object_type in &row.objects {
            check(&row.activity, object_type, true);
        }
    }
}

#[test]
fn the_not_acted_on_table_lists_what_the_interpreter_only_stores() {
    let doc = doc();
    for row in table(&doc, NOT_ACTED_ON) {
        for object_type in &row.objects {
            check(&row.activity, object_type, false);
        }
    }
}

#[test]
fn every_recognised_type_is_in_exactly_one_inbound_table() {
    let doc = doc();
    let inbound = table(&doc, INBOUND);
    let not_acted_on = table(&doc, NOT_ACTED_ON);
    let (inbound, not_acted_on) = (types(&inbound), types(&not_acted_on));
    for kind in ACTED_ON_TYPES.iter().chain(NOT_ACTED_ON_TYPES) {
        let found = [
            (INBOUND, inbound.contains(kind)),
            (NOT_ACTED_ON, not_acted_on.contains(kind)),
        ];
        let tables: Vec<&str> = found.iter().filter(|(_, f)| *f).map(|(t, _)| *t).collect();
        assert!(
            tables.len() == 1,
            "docs/FEDERATION.md must list {kind} in exactly one of `{INBOUND}` and \
             `{NOT_ACTED_ON}`, not in {tables:?}"
        );
    }
    let known: BTreeSet<&str> = ACTED_ON_TYPES
        .iter()
        .chain(NOT_ACTED_ON_TYPES)
        .copied()
        .collect();
    let listed: BTreeSet<&str> = inbound.union(&not_acted_on).copied().collect();
    let unknown: Vec<&&str> = listed.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "docs/FEDERATION.md lists {unknown:?}, which this test does not know: \
         add them to ACTED_ON_TYPES or NOT_ACTED_ON_TYPES"
    );
}

#[test]
fn the_outbound_table_lists_what_chorus_builds() {
    let doc = doc();
    let outbound = table(&doc, OUTBOUND);
    let listed = types(&outbound);
    let built: BTreeSet<&str> = OUTBOUND_TYPES.iter().copied().collect();
    assert_eq!(
        listed, built,
        "the `{OUTBOUND}` table of docs/FEDERATION.md must list exactly the activities \
         Chorus builds for local actions"
    );
}

#[test]
fn the_table_reader_reads_rows_and_object_types() {
    let doc = "\
# Doc
## Things
Some words.

| Activity | Object | Effect |
|---|---|---|
| Create | Note, Article or `Page` (a post, or a Person) | Taken in. |
| Like | Note | A favorite. |

## Next
";
    let rows = table(doc, "Things");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].activity, "Create");
    assert_eq!(rows[0].objects, ["Note", "Article", "Page"]);
    assert_eq!(rows[0].effect, "Taken in.");
    assert_eq!(rows[1].objects, ["Note"]);
}
