#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    zeroth::cli::main()
}
