//! The postman command line, built in the integration package so that its
//! tests reach it through `CARGO_BIN_EXE_postman-e2e`. Same code as `postman`.
fn main() -> std::process::ExitCode {
    postman_actors::cli::main()
}
