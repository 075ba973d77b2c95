/**
 * One HTTP request that must never block or fail the command it reports on: each try is
 * bounded (10 s by default), a failed try is retried once after a second, and what went wrong
 * comes back as a short phrase (an HTTP status, an error code) that never holds the URL, which
 * may be a secret (a healthchecks.io ping URL, a Slack webhook).
 */

export interface SendPolicy {
  /** How long one try may take, connecting and reading the answer. */
  timeoutMs: number;
  tries: number;
  /** The pause before a retry. */
  pauseMs: number;
}

export const defaultPolicy: SendPolicy = { timeoutMs: 10_000, tries: 2, pauseMs: 1_000 };

export interface Request {
  url: string;
  method: 'POST' | 'PUT';
  body: string;
  contentType: string;
}

/** Sends the request; undefined when it was answered 2xx, else why not (after every try). */
export async function send(
  request: Request,
  policy: SendPolicy = defaultPolicy,
): Promise<string | undefined> {
  let problem = '';
  for (let attempt = 1; attempt <= policy.tries; attempt++) {
    if (attempt > 1) await new Promise((resolve) => setTimeout(resolve, policy.pauseMs));
    const signal = AbortSignal.timeout(policy.timeoutMs);
    try {
      const response = await fetch(request.url, {
        method: request.method,
        body: request.body,
        headers: { 'content-type': request.contentType },
        signal,
        redirect: 'error',
      });
      await response.arrayBuffer().catch(() => undefined);
      if (response.ok) return undefined;
      problem = `HTTP ${response.status}`;
      // A refusal (a wrong URL, a bad body) does not change on a retry; an overload may.
      if (response.status < 500 && response.status !== 429) break;
    } catch (error) {
      problem = signal.aborted
        ? `no answer within ${policy.timeoutMs / 1000} s`
        : (errorCode(error) ?? 'the request failed');
    }
  }
  return `${problem} (${policy.tries} ${policy.tries === 1 ? 'try' : 'tries'})`;
}

/** The code of a network error (ECONNREFUSED, ENOTFOUND, …): never its message, which names the host. */
function errorCode(error: unknown): string | undefined {
  let cause: unknown = error;
  for (let depth = 0; depth < 4 && cause && typeof cause === 'object'; depth++) {
    const code = (cause as { code?: unknown }).code;
    if (typeof code === 'string' && /^[A-Z0-9_]{2,40}$/.test(code)) return code;
    cause = (cause as { cause?: unknown }).cause;
  }
  return undefined;
}
