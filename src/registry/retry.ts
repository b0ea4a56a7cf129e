/**
 * Bounded retries with exponential backoff and jitter, for idempotent requests only (GET, HEAD):
 * a registry behind a load balancer answers 502/503 during a deploy, a CDN drops a connection,
 * 429 says "slow down". After `attempts` tries the last fault is raised, saying how many were
 * made, so a dead registry costs a few seconds and a clear error, never a hang.
 */
import { debuglog } from 'node:util';
import { CowdiskError, ErrorCode } from '../errors.js';
import { TransientError } from './faults.js';

const log = debuglog('cowdisk:registry');

export interface RetryPolicy {
  /** Tries in all, the first included. */
  attempts: number;
  /** The wait before the second try; each later wait doubles, up to maxDelayMs. */
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 4, baseDelayMs: 250, maxDelayMs: 4000 };

/** One try, no retry: for requests that are not idempotent (POST, PUT, PATCH). */
export const NO_RETRY: RetryPolicy = { attempts: 1, baseDelayMs: 0, maxDelayMs: 0 };

function delayFor(policy: RetryPolicy, retry: number, fault: TransientError): number {
  const backoff = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (retry - 1));
  // Full jitter in [backoff/2, backoff): clients that failed together do not retry together.
  const jittered = backoff / 2 + (Math.random() * backoff) / 2;
  const asked = fault.retryAfter === undefined ? 0 : Math.min(policy.maxDelayMs, fault.retryAfter * 1000);
  return Math.max(jittered, asked);
}

/** Runs `attempt` until it succeeds, fails with a fault that is not transient, or runs out of tries. */
export async function withRetries<T>(policy: RetryPolicy, attempt: () => Promise<T>): Promise<T> {
  for (let tried = 1; ; tried++) {
    try {
      return await attempt();
    } catch (err) {
      if (!(err instanceof TransientError)) throw err;
      if (tried >= policy.attempts) {
        if (tried === 1) throw err;
        throw new CowdiskError(ErrorCode.REGISTRY, `${err.message} (tried ${tried} times)`, { cause: err });
      }
      const wait = delayFor(policy, tried, err);
      log('retry %d of %d in %d ms: %s', tried, policy.attempts - 1, Math.round(wait), err.message);
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }
}
