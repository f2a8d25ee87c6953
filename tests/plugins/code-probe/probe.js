// The JavaScript side of the SDK code probe: the cases of `src/lib.rs`,
// each left for the SDK to report (an uncaught `Failure`, the default
// `resume`).

import * as stephost from './stephost.js';

class Probe {
  // No `resume`: the SDK's default answers one.
  run(ctx, doc) {
    const config = ctx.config();
    const url = config.url ?? '';
    switch (config.case) {
      case 'send':
        stephost.send({ method: 'GET', url });
        break;
      case 'parse-response':
        stephost.send({ method: 'GET', url }).json();
        break;
      case 'sign-with-ungranted-secret':
        stephost.hmacWithSecret('sha256', 'not-granted', 'data');
        break;
      case 'unwritable-output':
        return stephost.completeJson({ value: 1n });
      case 'resume-without-resume':
        return stephost.retryAfter(1);
      case 'uncaught':
        throw new Error('the probe throws on purpose');
      default:
        return stephost.fail('unknown-case', String(config.case));
    }
    return stephost.completeJson('no failure');
  }
}

export const step = stephost.exportStep(new Probe(), { name: 'code-probe', version: '0.1.0' });
