// `{{name}}`: a stephost step plugin.
//
// The sample step greets: it completes with its JSON object input plus a
// `greeting` field built from the config's `greeting` (default `Hello`) and
// the input's `name` (default `world`). Replace `run` with your step; to
// wait for a partner, call `stephost.registerCallback()`, send the partner
// the ticket's URL, return `stephost.suspend(...)`, and add a `resume`
// method (see docs/writing-plugins.md in the stephost repository).

import * as stephost from './stephost.js';

class Plugin {
  run(ctx, doc) {
    const greeting = ctx.config().greeting ?? 'Hello';
    let document;
    try {
      document = stephost.parseJson(doc);
    } catch {
      document = null;
    }
    if (document === null || typeof document !== 'object' || Array.isArray(document)) {
      throw new stephost.Failure('invalid-document', 'the input must be a JSON object');
    }
    document.greeting = `${greeting}, ${document.name ?? 'world'}!`;
    return stephost.completeJson(document);
  }
}

export const step = stephost.exportStep(new Plugin(), {
  name: '{{name}}',
  version: '0.1.0',
  description: 'A stephost step plugin',
});
