"""The Python side of the SDK code probe: the cases of `src/lib.rs`, each
left for the SDK to report (an uncaught `Failure`, the default `resume`)."""

import stephost


class Probe:
    # No `resume`: the SDK's default answers one.
    def run(self, ctx, doc):
        config = ctx.config()
        url = config.get("url", "")
        case = config.get("case")
        if case == "send":
            stephost.send("GET", url)
        elif case == "parse-response":
            stephost.send("GET", url).json()
        elif case == "sign-with-ungranted-secret":
            stephost.hmac_with_secret(stephost.SHA256, "not-granted", b"data")
        elif case == "unwritable-output":
            return stephost.complete_json({"value": object()})
        elif case == "resume-without-resume":
            return stephost.retry_after(1)
        elif case == "uncaught":
            raise RuntimeError("the probe raises on purpose")
        else:
            return stephost.fail("unknown-case", str(case))
        return stephost.complete_json("no failure")


Step = stephost.export(Probe, name="code-probe", version="0.1.0")
