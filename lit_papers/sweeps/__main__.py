"""`python -m lit_papers.sweeps sweeps/X.yaml`: the offline sweep runner, the same as `python -m lit_papers sweep`."""

from lit_papers.sweeps.runner import main

if __name__ == "__main__":
    main()
