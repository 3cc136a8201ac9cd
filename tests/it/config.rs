//! Config loading against files in tests/testdata/config: every good file loads, and each bad
//! file fails with exactly the message in its `.err` file (set LOOKOUT_BLESS=1 to rewrite them).

use std::path::Path;

fn files(dir: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no files in {dir}");
    v
}

#[test]
fn good_files_load() {
    for f in files("tests/testdata/config/good") {
        if let Err(e) = lookout::config::load(&f) {
            panic!("{} should load: {e}", f.display());
        }
    }
    // And the shipped configs too.
    let mut shipped = vec![std::path::PathBuf::from("config/lookout.yml")];
    shipped.extend(
        std::fs::read_dir("config/examples")
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yml")),
    );
    for f in shipped {
        lookout::config::load(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
}

#[test]
fn every_documented_field_is_kept() {
    let c = lookout::config::load(Path::new("tests/testdata/config/good/all_fields.yml")).unwrap();
    assert_eq!(c.modules.len(), 10);
    let yaml = c.to_yaml();
    for field in [
        "skip_resolve_phase_with_proxy",
        "fail_if_header_not_matches",
        "validate_additional_rrs",
        "dont_fragment",
    ] {
        assert!(yaml.contains(field), "{field} lost:\n{yaml}");
    }
    assert!(
        !yaml.contains("secret-token"),
        "a file's secret leaked into /config:\n{yaml}"
    );
}

#[test]
fn bad_files_fail_with_their_golden_message() {
    let bless = std::env::var_os("LOOKOUT_BLESS").is_some();
    let mut failures = Vec::new();
    for f in files("tests/testdata/config/invalid") {
        let err_file = f.with_extension("err");
        let got = match lookout::config::load(&f) {
            Ok(_) => {
                failures.push(format!("{} loaded but should fail", f.display()));
                continue;
            }
            Err(e) => e.to_string(),
        };
        assert!(
            got.starts_with(&f.display().to_string()),
            "error does not name the file: {got}"
        );
        if bless {
            std::fs::write(&err_file, format!("{got}\n")).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&err_file).unwrap_or_default();
        if want.trim_end() != got {
            failures.push(format!(
                "{}:\n  want: {}\n  got:  {got}",
                f.display(),
                want.trim_end()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
