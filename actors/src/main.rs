//! The `postman` binary: the command line is in the actors library.
fn main() -> std::process::ExitCode {
    postman_actors::cli::main()
}
