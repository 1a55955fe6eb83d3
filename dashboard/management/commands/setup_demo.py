from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from dashboard.management.demo_history import seed_demo_history
from dashboard.management.demo_showcase import seed_demo_showcase
from dashboard.models import Credential, Membership, Role, Team
from providers import get_provider_class
from providers.simulators import DEFAULT_TOKEN, available


class Command(BaseCommand):
    help = (
        "Create the demo login (demo/demo), the Demo team, credentials for the local simulators "
        "a few weeks of demo history for the charts, and a showcase (a scored comparison with "
        "its judge and ratings, a rerun to diff, a batch job, cached rows, a rate-limited "
        "credential), all marked as demo data."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--base-port", type=int, default=8901)
        parser.add_argument("--username", default="demo")
        parser.add_argument("--password", default="demo")
        parser.add_argument(
            "--history-jobs",
            type=int,
            default=150,
            help="Demo history: finished jobs over the last three weeks, marked as demo data "
            "(0: none). Written once; running the command again adds none.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        user, created = User.objects.get_or_create(
            username=options["username"], defaults={"is_staff": True, "is_superuser": True}
        )
        if created:
            user.set_password(options["password"])
            user.save()
        team, _ = Team.objects.get_or_create(name="Demo")
        Membership.objects.update_or_create(team=team, user=user, defaults={"role": Role.ADMIN})
        for offset, slug in enumerate(available()):
            base_url = f"http://{options['host']}:{options['base_port'] + offset}"
            label = get_provider_class(slug).label
            credential, made = Credential.objects.get_or_create(
                team=team,
                name=f"{label} (simulator)",
                defaults={
                    "provider": slug,
                    "secret": DEFAULT_TOKEN,
                    "base_url": base_url,
                    "max_concurrency": 8,
                },
            )
            if not made and credential.base_url != base_url:
                Credential.objects.filter(pk=credential.pk).update(base_url=base_url)
        seeded = seed_demo_history(team, jobs=options["history_jobs"], days=21, user=user)
        if seeded:
            self.stdout.write(
                f"Demo history: {seeded} finished jobs over three weeks, marked as demo data."
            )
        if seed_demo_showcase(team, user=user):
            self.stdout.write(
                "Demo showcase: a scored comparison with its judge and ratings, a rerun to diff, "
                "a batch job, a job with cached rows and a rate-limited credential."
            )
        self.stdout.write(f"Demo login: {options['username']} / {options['password']} (team Demo)")
