//! The `tuma` binary: a thin shell over the library's CLI.

fn main() -> std::process::ExitCode {
    tuma::cli::main()
}
