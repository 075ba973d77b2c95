import type { EC2Client } from '@aws-sdk/client-ec2';
import { UserError } from '../errors.ts';

/**
 * An EC2 client for a region: credentials from the AWS SDK chain (OIDC via
 * aws-actions/configure-aws-credentials), the endpoint from AWS_ENDPOINT_URL_EC2 when set.
 * The SDK is loaded only when EBS is used.
 */
export async function ec2Client(region: string): Promise<EC2Client> {
  const { EC2Client } = await import('@aws-sdk/client-ec2');
  return new EC2Client({
    region,
    ...(process.env.AWS_ENDPOINT_URL_EC2 ? { endpoint: process.env.AWS_ENDPOINT_URL_EC2 } : {}),
    maxAttempts: 5,
  });
}

/** The region: the `region` input, else AWS_REGION / AWS_DEFAULT_REGION. */
export function regionOf(input: string | undefined): string {
  const region = input?.trim() || process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION;
  if (!region) throw new UserError('region: required (or set AWS_REGION); e.g. eu-west-1');
  if (!/^[a-z]{2}(-[a-z]+)+-\d$/.test(region))
    throw new UserError(`region: '${region}' is not an AWS region name such as eu-west-1`);
  return region;
}

/**
 * An EC2 error as one line a user can act on: what was asked, EC2's code and message, and
 * for a denial, the permission to grant.
 */
export function ec2Error(error: unknown, doing: string): Error {
  const e = error as { name?: string; message?: string; $metadata?: unknown };
  if (!e?.$metadata || !e.name) return error as Error;
  if (e.name === 'UnauthorizedOperation') {
    return new UserError(
      `${doing}: not allowed (${e.message}); grant it in the role's IAM policy (see the README)`,
    );
  }
  if (/NotFound$|^InvalidParameter|^IncorrectState|LimitExceeded$|RateExceeded$/.test(e.name)) {
    return new UserError(`${doing}: ${e.name}: ${e.message}`);
  }
  return new Error(`${doing}: ${e.name}: ${e.message}`);
}
