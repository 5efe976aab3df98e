//! Generates the gRPC code from proto/steadfast/v1/*.proto with a vendored protoc, so that a
//! fresh machine needs nothing but crates.io.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment here.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let files = [
        "steadfast/v1/common.proto",
        "steadfast/v1/history.proto",
        "steadfast/v1/service.proto",
        "steadfast/v1/schedule.proto",
    ];
    tonic_build::configure()
        .file_descriptor_set_path(out.join("steadfast_descriptor.bin"))
        .compile_protos(&files, &["."])?;
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    Ok(())
}
