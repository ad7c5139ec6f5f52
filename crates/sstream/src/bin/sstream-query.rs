fn main() -> std::process::ExitCode {
    sstream::main_query()
}
