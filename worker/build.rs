//! Generates the prost types of `google.events.cloud.firestore.v1` (the data of Eventarc's Firestore events) from the
//! vendored `.proto` files under `proto/`, with `protox`, a pure-Rust protobuf compiler: no `protoc` is needed on the
//! build machine or in the Docker build stage.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/google/events/cloud/firestore/v1/data.proto",
        "proto/google/type/latlng.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
