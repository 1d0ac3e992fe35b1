from courseflow.cli import main

raise SystemExit(main())
