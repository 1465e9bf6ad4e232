fn main() -> std::process::ExitCode {
    oasis::cli::main()
}
