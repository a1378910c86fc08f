//! `docs/schema.graphql` is the published schema: this fails when the code's
//! schema drifts from it. Regenerate with
//! `CHORUS_UPDATE_SCHEMA=1 cargo test -p chorus-tests --test graphql_schema`.

use std::path::PathBuf;

#[test]
fn the_published_schema_matches_the_code() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/schema.graphql");
    let sdl = chorus_api::graphql::sdl();
    if std::env::var_os("CHORUS_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &sdl)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
    let published = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        published == sdl,
        "docs/schema.graphql is out of date; regenerate it with \
         `CHORUS_UPDATE_SCHEMA=1 cargo test -p chorus-tests --test graphql_schema`"
    );
}
