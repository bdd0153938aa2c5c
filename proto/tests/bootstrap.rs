//! Regenerates `src/generated/` from `proto/` and fails when the checked-in code is
//! stale. The generated code is committed so that building Vantage needs no
//! `protoc`; this test uses the vendored `protoc` binary from `protoc-bin-vendored`.

use std::path::PathBuf;

#[test]
fn generated_code_is_up_to_date() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = root.join("src/generated");
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc for this platform");
    // Edition 2021: set_var is safe; this test binary runs this one test only.
    std::env::set_var("PROTOC", protoc);

    let scratch = tempfile::tempdir().unwrap();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .out_dir(scratch.path())
        .compile_protos(
            &[root.join("proto/vantage/v1/fleet.proto")],
            &[root.join("proto")],
        )
        .expect("protoc run");

    let fresh = std::fs::read_to_string(scratch.path().join("vantage.v1.rs")).unwrap();
    let target = out.join("vantage.v1.rs");
    let current = std::fs::read_to_string(&target).unwrap_or_default();
    if current != fresh {
        std::fs::write(&target, &fresh).unwrap();
        panic!(
            "src/generated/vantage.v1.rs was stale and has been regenerated; \
             review and commit it"
        );
    }
}
