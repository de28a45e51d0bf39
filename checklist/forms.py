from __future__ import annotations

from django import forms

from checklist.models import Item


class ItemForm(forms.Form):
    status = forms.ChoiceField(choices=Item.Status.choices, required=False)
    comment = forms.CharField(
        required=False, max_length=2000, widget=forms.TextInput(attrs={"placeholder": "Comment"})
    )

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        if not data.get("status") and not (data.get("comment") or "").strip():
            raise forms.ValidationError("Choose a status or write a comment.")
        return data


class SignOffForm(forms.Form):
    comment = forms.CharField(
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "What you checked"}),
    )


class RevokeForm(forms.Form):
    reason = forms.CharField(
        max_length=2000, widget=forms.TextInput(attrs={"placeholder": "Why it is revoked"})
    )


class StartDateForm(forms.Form):
    start_date = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
