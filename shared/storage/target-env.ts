/** The prefix of a copy target's own storage variables: LIFEBOAT_TO_AWS_ACCESS_KEY_ID, … */
export const targetPrefix = 'LIFEBOAT_TO_';

/**
 * The variables that choose a storage service, its endpoint and its credentials: everything
 * the S3, GCS and Azure clients read (AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, AWS_PROFILE,
 * AWS_ROLE_ARN, AWS_REGION, GOOGLE_APPLICATION_CREDENTIALS, STORAGE_EMULATOR_HOST,
 * AZURE_STORAGE_CONNECTION_STRING, AZURE_CLIENT_SECRET, …).
 */
const storageVariable = /^(AWS_|AZURE_|GOOGLE_|GCLOUD_|CLOUDSDK_|STORAGE_EMULATOR_HOST$)/;

/**
 * The environment the target of a copy (`to-storage`) is opened with. Its storage variables
 * are the standard names with the prefix LIFEBOAT_TO_ (LIFEBOAT_TO_AWS_ENDPOINT_URL_S3,
 * LIFEBOAT_TO_AWS_ACCESS_KEY_ID, LIFEBOAT_TO_AZURE_STORAGE_CONNECTION_STRING, …). When any
 * of them is set, even empty (an unset secret), the target sees only those, the prefix
 * removed, and none of the source's storage variables, so that the source's credentials
 * and endpoint never go to the target's service; every other variable (PATH, HOME,
 * HTTPS_PROXY) stays. When none is set the target uses the same variables as the source:
 * `env` itself is returned.
 */
export function targetEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const own = Object.keys(env).filter(
    (name) => name.startsWith(targetPrefix) && storageVariable.test(name.slice(targetPrefix.length)),
  );
  if (own.length === 0) return env;
  const target: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(env)) if (!storageVariable.test(name)) target[name] = value;
  for (const name of own) target[name.slice(targetPrefix.length)] = env[name];
  return target;
}
