"""One check the LLM entry points make before loading anything large: the model named on the
command line can be found. transformers reports a missing folder or an unreachable hub id as a
40-line OSError traceback; here it is one line naming the flag."""


def check_model(name: str, flag: str) -> None:
    """ValueError naming `flag` when the configuration of `name` (a folder, or a hub id that is
    reachable or cached) cannot be loaded."""
    import transformers
    try:
        transformers.AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{flag} {name}: cannot load the model's configuration ({first}); "
                         f"give a model folder, or a hub id reachable from here or in the "
                         f"Hugging Face cache") from None
