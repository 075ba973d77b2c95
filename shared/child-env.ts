/**
 * The environment every child process gets: Lifeboat's own, less every secret it was given
 * and every credential a child has no use for. A backup is untrusted and hooks may run code
 * from a pull request, so nothing that can read a backup, write storage or mint a token
 * reaches them; `extra` adds what is documented for that child (e.g. `MYSQL_PWD` of a
 * throwaway server).
 */
const dropped = [
  /^INPUT_/i, // every action input, secrets included (INPUT_PASSWORD, INPUT_AGE-IDENTITY, …)
  /^LIFEBOAT_/i, // CLI inputs and secrets (LIFEBOAT_AGE_IDENTITY, LIFEBOAT_MYSQL_PASSWORD, …)
  /^MYSQL_/i, // a password or server of the caller's, never the child's target
  /^ACTIONS_(ID_TOKEN_REQUEST|RUNTIME|CACHE)_/i, // OIDC and runner tokens
  /^(GITHUB_TOKEN|GH_TOKEN)$/i,
  /^AWS_(SECRET_ACCESS_KEY|SESSION_TOKEN|ACCESS_KEY_ID|SECURITY_TOKEN|WEB_IDENTITY_TOKEN_FILE)$/i,
  /^AZURE_(STORAGE_CONNECTION_STRING|STORAGE_KEY|STORAGE_SAS_TOKEN|CLIENT_SECRET|CLIENT_CERTIFICATE_PASSWORD)$/i,
  /^(GOOGLE_APPLICATION_CREDENTIALS|CLOUDSDK_AUTH_ACCESS_TOKEN|GOOGLE_OAUTH_ACCESS_TOKEN)$/i,
];

export function childEnvironment(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (!dropped.some((pattern) => pattern.test(name))) env[name] = value;
  }
  return { ...env, ...extra };
}
