//! Compiles the public Chief of State protos and the internal cluster protos with a vendored protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let proto_root = "../proto";
    let files = [
        "chief_of_state/v1/common.proto",
        "chief_of_state/v1/service.proto",
        "chief_of_state/v1/writeside.proto",
        "chief_of_state/v1/readside.proto",
        "chief_of_state/v1/manager.proto",
        "chief_of_state/v1/persistence.proto",
        "google/rpc/status.proto",
        "cos/internal/v1/internal.proto",
        "cos/internal/v1/cluster.proto",
        "cos/internal/v1/readside.proto",
    ];
    let paths: Vec<String> = files
        .iter()
        .map(|file| format!("{proto_root}/{file}"))
        .collect();
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // tonic's prost codec with 1 KiB instead of 8 KiB per-call buffers (src/codec.rs).
        .codec_path("crate::codec::CompactCodec")
        .compile_protos(&paths, &[proto_root.to_string()])?;
    for path in &paths {
        println!("cargo:rerun-if-changed={path}");
    }
    Ok(())
}
