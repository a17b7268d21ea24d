//! Compile-fail (and a few compile-pass) tests of the `#[cached]` and
//! `#[invalidates]` attributes: each error points at the offending token and
//! says how to fix it. Regenerate the `.stderr` files with
//! `TRYBUILD=overwrite cargo test --test ui`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
