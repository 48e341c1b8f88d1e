//! The admin token the CLI sends to a node's admin port: one helper for
//! every subcommand that makes an admin HTTP call (`status`, `switchover`,
//! `cluster`, `keyspace`, `backup`, `dr`), so they all read it from the same place as
//! `tandem server`: `TANDEM_ADMIN_TOKEN`, or the file named by
//! `TANDEM_ADMIN_TOKEN_FILE`. Never prints the token.

/// The `Authorization` header line (with its CRLF) to add to an admin
/// request, or an empty string when no token is configured. Errors if
/// `TANDEM_ADMIN_TOKEN_FILE` names a file that cannot be read.
pub fn header() -> Result<String, String> {
    let token = match std::env::var_os("TANDEM_ADMIN_TOKEN_FILE") {
        Some(path) => {
            Some(crate::server_cmd::read_secret_file(std::path::Path::new(&path), "TANDEM_ADMIN_TOKEN_FILE")?)
        }
        None => std::env::var("TANDEM_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()),
    };
    Ok(token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n")))
}
