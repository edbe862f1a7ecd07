fn main() -> std::process::ExitCode {
    repaero::cli::main()
}
