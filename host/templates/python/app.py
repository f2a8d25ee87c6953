"""`{{name}}`: a stephost step plugin.

The sample step greets: it completes with its JSON object input plus a
`greeting` field built from the config's `greeting` (default `Hello`) and
the input's `name` (default `world`). Replace `run` with your step; to wait
for a partner, call `stephost.register_callback()`, send the partner the
ticket's URL, return `stephost.suspend(...)`, and add a `resume` method
(see docs/writing-plugins.md in the stephost repository).
"""

import stephost


class Plugin:
    def run(self, ctx, doc):
        greeting = ctx.config().get("greeting", "Hello")
        try:
            document = stephost.parse_json(doc)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise stephost.Failure("invalid-document", "the input must be a JSON object")
        document["greeting"] = f"{greeting}, {document.get('name', 'world')}!"
        return stephost.complete_json(document)


# componentize-py looks for a class named after the exported interface.
Step = stephost.export(Plugin, name="{{name}}", version="0.1.0", description="A stephost step plugin")
