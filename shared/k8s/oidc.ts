/**
 * OIDC for the Kubernetes client: an `oidc` auth-provider's id-token, kept fresh by exchanging
 * its refresh-token at the issuer's token endpoint, as client-go's oidc provider does.
 */
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { User } from '@kubernetes/client-node';
import { UserError } from '../errors.ts';

/**
 * An OIDC auth-provider's id-token, refreshed as client-go's oidc provider does: used until 10 s
 * before its `exp`, then exchanged with the refresh-token at the issuer's token endpoint
 * (found by OpenID discovery, trusting idp-certificate-authority(-data) when given). The new
 * tokens are kept in memory; unlike kubectl, the kubeconfig file is not rewritten.
 * (@kubernetes/client-node 2.0.1's own refresh fails: it hands openid-client a string for a URL.)
 */
export class OidcTokens {
  private readonly user: string;
  private readonly config: Record<string, string | undefined>;
  private idToken: string | undefined;
  private refreshToken: string | undefined;
  private stale = false;
  private tokenEndpoint: string | undefined;

  constructor(user: User) {
    this.user = user.name;
    this.config = (user.authProvider as { config?: Record<string, string> }).config ?? {};
    this.idToken = this.config['id-token'];
    this.refreshToken = this.config['refresh-token'];
  }

  /** After a 401: the id-token is refreshed before it is sent again. */
  expire(): void {
    this.stale = true;
  }

  async token(): Promise<string> {
    const exp = this.idToken ? jwtExpiry(this.idToken) : 0;
    if (this.idToken && !this.stale && (exp === undefined || exp * 1000 > Date.now() + 10_000))
      return this.idToken;
    const why = this.stale ? 'the server refused it' : this.idToken ? 'it expired' : 'there is none';
    const fail = (what: string) =>
      new UserError(`kubeconfig: user '${this.user}': cannot refresh the OIDC id-token (${why}): ${what}`);
    const issuer = this.config['idp-issuer-url'];
    const clientId = this.config['client-id'];
    if (!this.refreshToken || !issuer || !clientId)
      throw fail('refreshing needs refresh-token, idp-issuer-url and client-id in its auth-provider config');
    const ca = this.config['idp-certificate-authority']
      ? fs.readFileSync(this.config['idp-certificate-authority'])
      : this.config['idp-certificate-authority-data']
        ? Buffer.from(this.config['idp-certificate-authority-data'], 'base64')
        : undefined;
    if (!this.tokenEndpoint) {
      const discovery = await fetchJson(`${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`, ca);
      const endpoint = (discovery.json as { token_endpoint?: unknown } | undefined)?.token_endpoint;
      if (discovery.code !== 200 || typeof endpoint !== 'string')
        throw fail(
          `the issuer's OpenID discovery answered ${discovery.code || discovery.error} without a token_endpoint`,
        );
      this.tokenEndpoint = endpoint;
    }
    const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: this.refreshToken });
    const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' };
    const secret = this.config['client-secret'];
    if (secret)
      headers.authorization = `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(secret)}`).toString('base64')}`;
    else form.set('client_id', clientId);
    const answer = await fetchJson(this.tokenEndpoint, ca, {
      method: 'POST',
      headers,
      body: form.toString(),
    });
    const body = (answer.json ?? {}) as { id_token?: unknown; refresh_token?: unknown; error?: unknown };
    if (answer.code !== 200)
      throw fail(
        `the token endpoint answered ${answer.code || answer.error}${typeof body.error === 'string' ? ` (${body.error.slice(0, 100)})` : ''}`,
      );
    if (typeof body.id_token !== 'string') throw fail('the token endpoint gave no id_token');
    this.idToken = body.id_token;
    if (typeof body.refresh_token === 'string') this.refreshToken = body.refresh_token;
    this.stale = false;
    return this.idToken;
  }
}

/** A JWT's exp claim (seconds), or undefined when it has none or is no JWT. */
function jwtExpiry(token: string): number | undefined {
  try {
    const exp = (
      JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as { exp?: unknown }
    ).exp;
    return typeof exp === 'number' ? exp : undefined;
  } catch {
    return undefined;
  }
}

/** One small JSON request (the OIDC issuer's), its status (0 when it could not be made) and JSON body. */
function fetchJson(
  url: string,
  ca: Buffer | undefined,
  init: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<{ code: number; json?: unknown; error?: string }> {
  return new Promise((resolve) => {
    let target: URL;
    try {
      target = new URL(url);
    } catch {
      resolve({ code: 0, error: 'not a URL' });
      return;
    }
    const transport = target.protocol === 'http:' ? http : https;
    const req = transport.request(
      target,
      {
        method: init.method ?? 'GET',
        headers: { accept: 'application/json', ...init.headers },
        ...(ca && target.protocol === 'https:' ? { ca } : {}),
        timeout: 30_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (error) => resolve({ code: 0, error: error.message }));
        res.on('end', () => {
          let json: unknown;
          try {
            json = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          } catch {}
          resolve({ code: res.statusCode ?? 0, json });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('no answer in 30 s')));
    req.on('error', (error) => resolve({ code: 0, error: `cannot reach ${target.host}: ${error.message}` }));
    req.end(init.body);
  });
}
