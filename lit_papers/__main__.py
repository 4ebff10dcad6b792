"""`python -m lit_papers ...`. The guard matters: DDP relaunches this module in each rank."""

from lit_papers.cli import main

if __name__ == "__main__":
    main()
