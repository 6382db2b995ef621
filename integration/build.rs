//! Compiles the example bank-account messages with a vendored protoc.
//!
//! Only messages are generated (the bank domain has no services of its own). Type names are enabled so every
//! message implements `prost::Name` and can be packed into a `google.protobuf.Any` with the canonical
//! `type.googleapis.com/<full name>` URL that Chief of State and other languages' handlers expect.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let proto_root = "../proto";
    let bank_proto = format!("{proto_root}/examples/bank/v1/bank.proto");
    let protos = [bank_proto.as_str()];
    let includes = [proto_root];

    let mut config = tonic_prost_build::Config::new();
    config
        .protoc_executable(protoc)
        .enable_type_names()
        .type_name_domain(["."], "type.googleapis.com");

    tonic_prost_build::configure()
        .build_server(false)
        .build_client(false)
        .compile_with_config(config, &protos, &includes)?;
    println!("cargo:rerun-if-changed={bank_proto}");
    Ok(())
}
