//! `--access-key ID` and `--secret-key-env VAR`: the access key a command
//! signs its calls with (`meridian admin`, `meridian bench produce`). The
//! secret never goes on the command line: it is read from the environment
//! variable `--secret-key-env` names.

use meridian_face::access::Signer;

/// Default of `--secret-key-env`.
pub const DEFAULT_SECRET_KEY_ENV: &str = "MQ_SECRET_KEY";

/// An access key given on the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct AccessKeyArgs {
    /// Sign every call with this access key; its secret is read from the
    /// environment variable --secret-key-env names. Without it `meridian
    /// admin` signs with the topology's `[access] internal_key`, and
    /// `meridian bench` does not sign.
    #[arg(long, global = true, env = "MQ_ACCESS_KEY")]
    pub access_key: Option<String>,
    /// The environment variable that holds the secret of --access-key.
    #[arg(long, global = true, default_value = DEFAULT_SECRET_KEY_ENV)]
    pub secret_key_env: String,
}

impl AccessKeyArgs {
    /// What signs with `--access-key`; `None` when no key was given. An
    /// error names the variable when it does not hold the secret.
    pub fn signer(&self) -> anyhow::Result<Option<Signer>> {
        let Some(access_key) = &self.access_key else {
            return Ok(None);
        };
        let variable = &self.secret_key_env;
        let secret = match std::env::var(variable) {
            Ok(secret) => secret,
            Err(std::env::VarError::NotPresent) => anyhow::bail!(
                "--access-key {access_key} needs its secret in the environment variable \
                 {variable}, which is not set"
            ),
            Err(std::env::VarError::NotUnicode(_)) => anyhow::bail!(
                "--access-key {access_key}: the environment variable {variable} does not \
                 hold UTF-8 text"
            ),
        };
        Ok(Some(crate::admin::signer_of(access_key.clone(), secret)))
    }
}
