//! Compiles stepguard's own protos (proto/) with protox + tonic-prost-build: no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/stepguard/v1/grant.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
